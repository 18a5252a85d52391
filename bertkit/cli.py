"""The `bertkit` command: a thin front end over the Python API, its flags built from the option dataclasses.

Every user mistake surfaces as a BertkitError and is printed as one line on stderr with exit code 2;
no traceback reaches the user for bad input. Only the command being run is built (and its modules
imported), so `bertkit --help` does not wait for torch.

A new command is one `Command` in `COMMANDS` (or in a group's children): its help, a function adding
its flags (usually `add_options` on its option dataclass), and a function running it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError
from bertkit.options import add_options, build


@dataclass(frozen=True)
class Command:
    help: str
    flags: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], None] | None = None
    children: Callable[[], dict[str, Command]] | None = None  # a group: `bertkit tokenizer train`


def _option_values(args: argparse.Namespace, *classes: type) -> dict[str, Any]:
    """The parsed values of the fields of `classes`, as keywords for the API."""
    names = {f.name for cls in classes for f in fields(cls)}
    return {key: value for key, value in vars(args).items() if key in names}


# --- tokenizer train ---------------------------------------------------------------------------------------

def _tokenizer_train_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.tokenizer import TokenizerTrainOptions

    add_options(parser, TokenizerTrainOptions)


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import TokenizerTrainOptions, train_tokenizer_to

    tokenizer = train_tokenizer_to(build(TokenizerTrainOptions, args))
    print(f"wrote a WordPiece vocab of {tokenizer.vocab_size} tokens to {args.out}", file=sys.stderr)


# --- finetune TASK -----------------------------------------------------------------------------------------

def _finetune_commands() -> dict[str, Command]:
    from bertkit.tasks import TASKS

    commands = {name: Command(task.help, _finetune_flags(task), _finetune) for name, task in TASKS.items()}
    commands["setfit"] = Command("few-shot: contrastive pairs, then a logistic-regression head on the embeddings "
                                 "(same files as classify)", _setfit_flags, _setfit)
    commands["zeroshot"] = Command("no training: a classifier by cosine similarity of the text to each label's description",
                                   _zeroshot_flags, _zeroshot)
    return commands


class _OtherTaskFlag(argparse.Action):
    """A flag of other tasks only (`--crf` on classify): a one-line error naming the tasks that take it."""

    def __init__(self, *args: Any, tasks: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = tasks

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        raise BertkitError(f"{option_string} is a flag of `bertkit finetune {'|'.join(self.tasks)}` only")


def _other_task_flags(parser: argparse.ArgumentParser, task: type) -> None:
    from bertkit.options import flag_of
    from bertkit.tasks import TASKS

    own = {flag_of(f) for f in fields(task.Options)}
    others: dict[str, list[str]] = {}
    for name, other in TASKS.items():
        for f in fields(other.Options):
            if f.metadata.get("help") and flag_of(f) not in own:
                others.setdefault(flag_of(f), []).append(name)
    for flag, tasks in others.items():
        parser.add_argument(flag, action=_OtherTaskFlag, tasks=tasks, nargs="?", help=argparse.SUPPRESS)


def _finetune_flags(task: type) -> Callable[[argparse.ArgumentParser], None]:
    def flags(parser: argparse.ArgumentParser) -> None:
        from bertkit.continual import ContinualOptions
        from bertkit.efficient import EfficientOptions
        from bertkit.finetuning import FinetuneOptions
        from bertkit.trainer import TrainConfig

        parser.add_argument("--train", required=True, help="training file")
        parser.add_argument("--dev", help="dev file: evaluated after each epoch; the best epoch's model is kept")
        parser.add_argument("--out", required=True, help="output model directory")
        parser.add_argument("--model", help="pre-trained model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
        add_options(parser, task.Options)
        add_options(parser, TrainConfig)
        add_options(parser, FinetuneOptions)
        add_options(parser, EfficientOptions)
        add_options(parser, ContinualOptions)
        _other_task_flags(parser, task)
        parser.set_defaults(task_name=task.name)

    return flags


def _finetune(args: argparse.Namespace) -> None:
    from bertkit import api
    from bertkit.continual import ContinualOptions, forgetting_summary
    from bertkit.efficient import EfficientOptions
    from bertkit.finetuning import FinetuneOptions
    from bertkit.tasks import TASKS
    from bertkit.trainer import TrainConfig

    task = TASKS[args.task_name]
    options = _option_values(args, task.Options, TrainConfig, FinetuneOptions, EfficientOptions, ContinualOptions)
    result = api.finetune(task.name, train=args.train, dev=args.dev, out=args.out, model=args.model, **options)
    history = result.history
    if history.best is not None:
        print(f"best dev {task.main_metric} {history.best:.4f} at epoch {history.best_epoch}; model in {args.out}",
              file=sys.stderr)
    else:
        print(f"model in {args.out}", file=sys.stderr)
    if (report := result.cross_validation) is not None:
        summary = ", ".join(f"{k} {report['mean'][k]:.4f} ± {report['std'][k]:.4f}" for k in report["mean"])
        print(f"{report['folds']}-fold cross-validation: {summary} (cross_validation.json)", file=sys.stderr)
    if args.continual and (summary := forgetting_summary(args.out)):
        print(summary, file=sys.stderr)


# --- distill ----------------------------------------------------------------------------------------------

def _distill_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.distillation import DistillOptions
    from bertkit.finetuning import FinetuneOptions
    from bertkit.trainer import TrainConfig

    parser.add_argument("--teacher", required=True, help="a model directory fine-tuned for classify or ner")
    parser.add_argument("--train", required=True, help="training file, in the teacher's format and columns")
    parser.add_argument("--dev", help="dev file: evaluated after each epoch; the best epoch's student is kept")
    parser.add_argument("--out", required=True, help="output model directory (the student)")
    add_options(parser, DistillOptions)
    add_options(parser, TrainConfig)
    add_options(parser, FinetuneOptions, only=("eval_batch_size", "resume", "overwrite", "encoding"))


def _distill(args: argparse.Namespace) -> None:
    from bertkit import api
    from bertkit.distillation import DistillOptions
    from bertkit.finetuning import FinetuneOptions
    from bertkit.trainer import TrainConfig

    options = _option_values(args, DistillOptions, TrainConfig, FinetuneOptions)
    history = api.distill(args.teacher, train=args.train, dev=args.dev, out=args.out, **options).history
    if history.best is not None:
        metric = json.loads((Path(args.out) / "metrics.json").read_text(encoding="utf-8"))["main_metric"]
        print(f"best dev {metric} {history.best:.4f} at epoch {history.best_epoch}; student in {args.out}", file=sys.stderr)
    else:
        print(f"student in {args.out}", file=sys.stderr)


# --- tune TASK ---------------------------------------------------------------------------------------------

def _tune_commands() -> dict[str, Command]:
    from bertkit.tasks import TASKS

    return {name: Command(f"search hyper-parameters of `finetune {name}` on the dev score (Optuna)",
                          _tune_flags(task), _tune) for name, task in TASKS.items()}


def _tune_flags(task: type) -> Callable[[argparse.ArgumentParser], None]:
    def flags(parser: argparse.ArgumentParser) -> None:
        from bertkit.trainer import TrainConfig
        from bertkit.tuning import SEARCHED, TuneOptions

        parser.add_argument("--train", required=True, help="training file")
        parser.add_argument("--dev", required=True, help="dev file: the score the search maximises")
        parser.add_argument("--out", required=True, help="output directory (the study, the best model, the leaderboard)")
        parser.add_argument("--model", help="pre-trained model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
        add_options(parser, TuneOptions)
        add_options(parser, task.Options)
        add_options(parser, TrainConfig, skip=SEARCHED)
        parser.set_defaults(task_name=task.name)

    return flags


def _tune(args: argparse.Namespace) -> None:
    from bertkit.tasks import TASKS
    from bertkit.trainer import TrainConfig
    from bertkit.tuning import TuneOptions, tune

    task = TASKS[args.task_name]
    options = _option_values(args, task.Options, TrainConfig, TuneOptions)
    result = tune(task.name, args.train, args.dev, args.out, args.model, **options)
    settings = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.params.items())
    print(f"best dev {task.main_metric} {result.value:.4f} ({settings}); model in {result.model.directory}, "
          f"trials in {args.out}/leaderboard.csv", file=sys.stderr)


def _setfit_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.finetuning import FinetuneOptions
    from bertkit.setfit import SetFitOptions
    from bertkit.tasks.classify import ClassifyOptions

    parser.add_argument("--train", required=True, help="training file (CSV/TSV/JSONL, as for classify)")
    parser.add_argument("--dev", help="dev file, scored once at the end")
    parser.add_argument("--out", required=True, help="output model directory (a classifier that predicts, serves and exports)")
    parser.add_argument("--model", help="sentence encoder or any bertkit checkpoint (default: the packaged all-MiniLM-L6-v2)")
    add_options(parser, ClassifyOptions, only=("max_seq_len", "text_column", "label_column"))
    add_options(parser, SetFitOptions)
    add_options(parser, FinetuneOptions, only=("overwrite",))


def _setfit(args: argparse.Namespace) -> None:
    from bertkit import api
    from bertkit.setfit import SetFitOptions
    from bertkit.tasks.classify import ClassifyOptions

    options = _option_values(args, ClassifyOptions, SetFitOptions)
    history = api.finetune("setfit", train=args.train, dev=args.dev, out=args.out, model=args.model,
                           overwrite=args.overwrite, **options).history
    epoch = history.epochs[0]
    dev = f"; dev accuracy {history.best:.4f}" if history.best is not None else ""
    print(f"SetFit on {epoch['examples']} examples, {epoch['pairs']} pairs{dev}; model in {args.out}", file=sys.stderr)


def _zeroshot_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.finetuning import FinetuneOptions
    from bertkit.setfit import ZeroShotOptions

    parser.add_argument("--labels", required=True, help='a JSON file {"label": "description", ...}')
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--model", help="sentence encoder (default: the packaged all-MiniLM-L6-v2)")
    add_options(parser, ZeroShotOptions)
    add_options(parser, FinetuneOptions, only=("overwrite",))


def _zeroshot(args: argparse.Namespace) -> None:
    from bertkit import api
    from bertkit.setfit import ZeroShotOptions

    api.zeroshot(args.labels, out=args.out, model=args.model, overwrite=args.overwrite,
                 **_option_values(args, ZeroShotOptions))
    print(f"zero-shot classifier in {args.out}; run `bertkit predict --model {args.out}`", file=sys.stderr)


# --- pretrain ----------------------------------------------------------------------------------------------

def _pretrain_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.pretraining import TRAIN_DEFAULTS, PretrainSettings
    from bertkit.trainer import TrainConfig

    add_options(parser, PretrainSettings)
    add_options(parser, TrainConfig, skip=("epochs", "max_steps", "patience", "group_by_length", "max_grad_norm"),
                defaults=TRAIN_DEFAULTS)


def _pretrain(args: argparse.Namespace) -> None:
    from bertkit import api
    from bertkit.dist import is_main
    from bertkit.pretraining import PretrainSettings
    from bertkit.trainer import TrainConfig

    history = api.pretrain(**_option_values(args, PretrainSettings, TrainConfig))
    last = history.epochs[-1].get("dev", {}) if history.epochs else {}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items())
    if is_main():
        print(f"model in {args.out}" + (f"; held-out {summary}" if summary else ""), file=sys.stderr)


# --- evaluate, predict, serve ------------------------------------------------------------------------------

def _inference_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    from bertkit.inference import InferenceOptions

    add_options(parser, InferenceOptions, only=only)


def _load(args: argparse.Namespace):
    from bertkit import api
    from bertkit.inference import InferenceOptions

    return api.load(args.model, **_option_values(args, InferenceOptions))


def _evaluate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    _inference_flags(parser)


def _evaluate(args: argparse.Namespace) -> None:
    print(json.dumps(_load(args).evaluate(args.data), ensure_ascii=False))


def _predict_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", help="a .txt file (one text per line) or a file in the training format; every row "
                        'gets one line with its "id" (or line number), an empty text {..., "error": "empty text"}')
    parser.add_argument("texts", nargs="*", metavar="TEXT")
    parser.add_argument("--output", help="write the JSON lines to this file instead of stdout (with a progress bar)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted --output file: keep its whole lines, predict the rest")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--prompt", metavar="FILE", help='zero-shot with the masked-LM head of --model (a pre-trained '
                        'checkpoint): a JSON file {"template": "{text} ... [MASK] ...", "verbalizer": {"label": ["word"]}}')
    parser.add_argument("--calibrate", action="store_true",
                        help="with --prompt: divide the scores by those of the content-free input N/A")
    _inference_flags(parser)


def _predict_prompt(args: argparse.Namespace) -> None:
    """`predict --prompt`: the texts (or an input file's text column) through a PromptClassifier, to stdout."""
    from bertkit import api
    from bertkit.embeddings import read_texts

    if args.output or args.resume or args.backend != "torch":
        raise BertkitError("--prompt writes to stdout with the torch backend (no --output, --resume or --backend onnx)")
    classifier = api.prompt_classifier(args.prompt, model=args.model, calibrate=args.calibrate, batch_size=args.batch_size)
    ids, texts = read_texts(args.input) if args.input else (range(1, len(args.texts) + 1), args.texts)
    for number, prediction in zip(ids, classifier.predict(list(texts))):
        print(json.dumps({"id": number, **prediction}, ensure_ascii=False))


def _predict(args: argparse.Namespace) -> None:
    from bertkit.inference import predict_file

    if bool(args.input) == bool(args.texts):
        raise BertkitError("give either --input FILE or texts on the command line")
    if (args.output or args.resume or args.overwrite) and not args.input:
        raise BertkitError("--output, --resume and --overwrite go with --input FILE")
    if args.calibrate and not args.prompt:
        raise BertkitError("--calibrate goes with --prompt FILE")
    if args.prompt:
        return _predict_prompt(args)
    model = _load(args)
    if args.input:
        written = predict_file(model.predictor, args.input, args.output, resume=args.resume, overwrite=args.overwrite)
        if args.output:
            print(f"wrote {written} predictions to {args.output}", file=sys.stderr)
        return
    predictor = model.predictor
    for prediction in predictor.predict_stream(predictor.from_texts(args.texts)):
        print(json.dumps(prediction, ensure_ascii=False))


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=32, help="texts per model batch, gathered across requests")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with")
    parser.add_argument("--max-texts", type=int, default=64, help="texts (QA: items) per request; more is refused (413)")
    parser.add_argument("--max-chars", type=int, default=100_000, help="characters per text; longer is refused (413)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    _inference_flags(parser, only=("fp32", "backend", "onnx"))
    parser.add_argument("--adapter", action="append", metavar="NAME=DIR",
                        help="also serve this adapter directory (finetune --peft) on --model's weights, at "
                             "POST /v1/adapters/NAME/predict; repeat for more")


def _serve(args: argparse.Namespace) -> None:
    from bertkit.server import ServerLimits, parse_adapters, serve

    limits = ServerLimits(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                          max_texts=args.max_texts, max_chars=args.max_chars)
    serve(args.model, args.host, args.port, limits, threads=args.threads, backend=args.backend, onnx_file=args.onnx,
          fp32=args.fp32, adapters=parse_adapters(args.adapter))


# --- baseline ----------------------------------------------------------------------------------------------

def _baseline_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.baselines import BaselineOptions
    from bertkit.tasks.classify import ClassifyOptions

    parser.add_argument("--train", required=True, help="training file (as for `finetune classify`)")
    parser.add_argument("--test", required=True, help="labelled file to score on")
    parser.add_argument("--out", help="also write metrics.json and predictions.jsonl here")
    add_options(parser, ClassifyOptions, skip=("max_seq_len", "long", "stride", "window_pool"))  # TF-IDF reads every word
    add_options(parser, BaselineOptions)


def _baseline(args: argparse.Namespace) -> None:
    from bertkit.baselines import BaselineOptions, baseline
    from bertkit.tasks.classify import ClassifyOptions

    metrics = baseline(args.train, args.test, args.out, **_option_values(args, ClassifyOptions, BaselineOptions))
    print(json.dumps(metrics, ensure_ascii=False))


# --- embed, similar ---------------------------------------------------------------------------------------

def _embedding_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.embeddings import EmbedOptions

    parser.add_argument("--model", default=None, help="model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--text-column", default="text", help="text column of a CSV/TSV/JSONL input")
    add_options(parser, EmbedOptions)
    _inference_flags(parser, only=("batch_size",))


def _encode_file(args: argparse.Namespace, path: str, extra: Sequence[str] = ()) -> tuple[list[int], list[str], Any]:
    """(ids, texts, vectors) of a file's texts, and of `extra` texts after them."""
    from bertkit import api
    from bertkit.embeddings import EmbedOptions, read_texts

    ids, texts = read_texts(path, args.text_column)
    vectors = api.embed(texts + list(extra), args.model, batch_size=args.batch_size, **_option_values(args, EmbedOptions))
    return ids, texts, vectors


def _embed_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a .txt file (one text per line) or a CSV/TSV/JSONL file")
    parser.add_argument("--output", required=True, help='F.npy (rows in input order) or F.jsonl ({"id", "embedding"} per line)')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    _embedding_flags(parser)


def _embed(args: argparse.Namespace) -> None:
    from pathlib import Path

    from bertkit.embeddings import check_output, write_embeddings

    output = Path(args.output)
    check_output(output, args.overwrite)  # before the model runs, not after
    ids, _, vectors = _encode_file(args, args.input)
    write_embeddings(output, ids, vectors)
    print(f"wrote {len(ids)} embeddings of size {vectors.shape[1]} to {output}", file=sys.stderr)


def _similar_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="a .txt file (one text per line) or a CSV/TSV/JSONL file")
    parser.add_argument("query", help="the text to compare with")
    parser.add_argument("--top", type=int, default=10, help="how many results (default: 10)")
    _embedding_flags(parser)


def _similar(args: argparse.Namespace) -> None:
    from bertkit.embeddings import cosine_top_k

    if args.top < 1:
        raise BertkitError(f"--top must be at least 1, got {args.top}")
    ids, texts, vectors = _encode_file(args, args.corpus, extra=[args.query])
    for index, score in cosine_top_k(vectors[-1], vectors[:-1], args.top):
        print(json.dumps({"id": ids[index], "text": texts[index], "score": score}, ensure_ascii=False))


# --- export onnx -------------------------------------------------------------------------------------------

def _export_onnx_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.export import ExportOptions

    add_options(parser, ExportOptions)


def _export_onnx(args: argparse.Namespace) -> None:
    from bertkit.export import ExportOptions, export_onnx

    result = export_onnx(**vars(build(ExportOptions, args)))
    check = f"max |onnx - torch| {result.max_abs_diff:.1e} on a held-out batch"
    if result.int8_max_abs_diff is not None:
        check += f" (int8: {result.int8_max_abs_diff:.1e})"
    print(f"wrote {result.path} ({result.quantize or 'fp32'}, {result.size_bytes / 2**20:.1f} MiB, "
          f"outputs {', '.join(result.outputs)}; {check})", file=sys.stderr)


# --- merge ------------------------------------------------------------------------------------------------

def _merge_flags(parser: argparse.ArgumentParser) -> None:
    from bertkit.efficient import MergeOptions

    add_options(parser, MergeOptions)


def _merge(args: argparse.Namespace) -> None:
    from bertkit.efficient import MergeOptions, merge

    out = merge(**vars(build(MergeOptions, args)))
    print(f"merged the adapter of {args.model_dir} into a plain model in {out}", file=sys.stderr)


# --- demo --------------------------------------------------------------------------------------------------

def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--quick", action="store_true", help="the same story on smaller budgets, in under two minutes")
    parser.add_argument("--encoder", action="store_true",
                        help="instead: the one-minute tour of a real BERT (tokenize, encode, similarity, checkpoint round trip)")
    parser.add_argument("--model", default=None, help="with --encoder: model directory or hub id (default: all-MiniLM-L6-v2)")


def _demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo, run_encoder_demo

    if args.encoder:
        run_encoder_demo(args.model, args.out)
    else:
        run_demo(args.out, quick=args.quick)


COMMANDS: dict[str, Command] = {
    "tokenizer": Command("WordPiece vocabularies", children=lambda: {
        "train": Command("train a WordPiece vocab from plain-text files", _tokenizer_train_flags, _tokenizer_train),
    }),
    "finetune": Command("fine-tune a pre-trained BERT on labelled data", children=_finetune_commands),
    "distill": Command("train a smaller student to match a fine-tuned classify or ner model (knowledge distillation)",
                       _distill_flags, _distill),
    "tune": Command("search fine-tuning hyper-parameters on the dev score (Optuna)", children=_tune_commands),
    "pretrain": Command("pre-train BERT (masked LM + next-sentence prediction) on raw text", _pretrain_flags, _pretrain),
    "evaluate": Command("score a fine-tuned model on a labelled file (one JSON object)", _evaluate_flags, _evaluate),
    "baseline": Command("TF-IDF + logistic regression on a classification file, scored as `evaluate` scores",
                        _baseline_flags, _baseline),
    "predict": Command("predict with a fine-tuned model (JSON lines, in input order)", _predict_flags, _predict),
    "serve": Command("serve a fine-tuned model over HTTP (POST /v1/predict, a web page at /)", _serve_flags, _serve),
    "embed": Command("sentence embeddings of a file's texts (.npy rows or JSON lines, input order)", _embed_flags, _embed),
    "similar": Command("rank a corpus by cosine similarity to a query (JSON lines, best first)", _similar_flags, _similar),
    "export": Command("export a model for other runtimes", children=lambda: {
        "onnx": Command("export a model directory to ONNX (dynamic batch and length), checked against PyTorch",
                        _export_onnx_flags, _export_onnx),
    }),
    "merge": Command("fold a LoRA adapter directory into a plain model directory (transformers loads it)",
                     _merge_flags, _merge),
    "demo": Command("the BERT paradigm on real data: pre-training pays, the practices side by side, pre-training from scratch", _demo_flags, _demo),
}


def _add_commands(parent: argparse.ArgumentParser, commands: dict[str, Command], words: list[str] | None, dest: str) -> None:
    """Add `commands` under `parent`, building in full only the one that `words` (argv's bare words) selects;
    `words` None builds every command."""
    sub_parsers = parent.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    for name, command in commands.items():
        sub = sub_parsers.add_parser(name, help=command.help, description=command.help)
        if words is not None and words[:1] != [name]:
            continue
        rest = None if words is None else words[1:]
        if command.children is not None:
            _add_commands(sub, command.children(), rest, f"{dest}_{name}")
        else:
            command.flags(sub)
            sub.set_defaults(run=command.run)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `bertkit` parser; given `argv`, only the command it names is built in full."""
    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end: tokenize, pre-train, fine-tune, serve.")
    words = None if argv is None else [arg for arg in argv if not arg.startswith("-")]
    _add_commands(parser, COMMANDS, words, "command")
    return parser


def _check_encoding(argv: Sequence[str]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates; say so now, not in a traceback later."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "backslashreplace").decode("utf-8")
            raise BertkitError(f"argument '{shown}' is not valid UTF-8; pass text as UTF-8") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_encoding(argv)
        args = build_parser(argv).parse_args(argv)
        args.run(args)
    except BertkitError as exc:
        print(f"bertkit: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, an unwritable --out: the system's own words, on one line
        print(f"bertkit: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
