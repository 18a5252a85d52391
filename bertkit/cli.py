"""The `bertkit` command: a thin front end over the library modules.

Every user mistake surfaces as a BertkitError and is printed as one line on stderr with exit code 2;
no traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from bertkit.errors import BertkitError
from bertkit.demo import StoryConfig
from bertkit.config import MODEL_SIZES


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(args.corpus, vocab_size=args.vocab_size, do_lower_case=not args.cased)
    tokenizer.save_pretrained(args.out)
    print(f"wrote a WordPiece vocab of {tokenizer.vocab_size} tokens to {args.out}", file=sys.stderr)


def _demo(args: argparse.Namespace) -> None:
    from bertkit.demo import StoryConfig, run_encoder_demo, run_story

    if args.encoder:
        run_encoder_demo(args.model, args.out or "runs/demo")
    else:
        run_story(StoryConfig(out=args.out or "runs/story", pretrain_steps=args.pretrain_steps, seeds=tuple(args.seeds)))


def _finetune(args: argparse.Namespace) -> None:
    from bertkit.finetune import finetune
    from bertkit.tasks import TASKS
    from bertkit.trainer import TrainConfig

    task_class = TASKS[args.task]
    settings = {key: getattr(args, key) for key in task_class.defaults if hasattr(args, key)}
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm, grad_accum=args.grad_accum,
        seed=args.seed, bf16=not args.no_bf16, patience=args.patience, group_by_length=args.group_by_length,
    )
    history = finetune(task_class(settings), args.train, args.out, args.model, args.dev, config,
                       eval_batch_size=args.eval_batch_size, resume=args.resume, overwrite=args.overwrite)
    if history.best is not None:
        print(f"best dev {task_class.main_metric} {history.best:.4f} at epoch {history.best_epoch}; model in {args.out}",
              file=sys.stderr)
    else:
        print(f"model in {args.out}", file=sys.stderr)


def _setfit(args: argparse.Namespace) -> None:
    from bertkit.setfit import SetFitConfig, train_setfit

    config = SetFitConfig(num_pairs=args.num_pairs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          k=args.k, max_seq_len=args.max_seq_len, head_c=args.head_c, seed=args.seed)
    settings = {"text_column": args.text_column, "label_column": args.label_column, "max_seq_len": args.max_seq_len}
    result = train_setfit(args.train, args.out, args.model, args.dev, config, settings, overwrite=args.overwrite)
    dev = f"; dev accuracy {result['dev']['accuracy']:.4f}" if "dev" in result else ""
    print(f"SetFit on {result['examples']} examples, {result['pairs']} pairs{dev}; model in {args.out}", file=sys.stderr)


def _zeroshot(args: argparse.Namespace) -> None:
    from bertkit.setfit import zeroshot_classifier

    zeroshot_classifier(args.labels, args.model, args.temperature, args.out, overwrite=args.overwrite)
    print(f"zero-shot classifier in {args.out}; run `bertkit predict --model {args.out}`", file=sys.stderr)


def _pretrain(args: argparse.Namespace) -> None:
    from bertkit.dist import is_main
    from bertkit.pretrain import PretrainSettings, pretrain
    from bertkit.trainer import TrainConfig

    sources = [flag for flag, value in (("--model", args.model), ("--config", args.config)) if value]
    if len(sources) > 1:
        raise BertkitError("give at most one of --model and --config")
    train = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
                        weight_decay=args.weight_decay, grad_accum=args.grad_accum, seed=args.seed,
                        bf16=not args.no_bf16, max_steps=args.steps, save_every=args.save_every)
    settings = PretrainSettings(
        corpus=args.corpus, out=args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        model_size=args.model_size, config=args.config, model=args.model, max_seq_len=args.max_seq_len,
        nsp=not args.no_nsp, whole_word_mask=args.whole_word_mask, train=train, resume=args.resume,
    )
    history = pretrain(settings)
    last = history.epochs[-1].get("dev", {}) if history.epochs else {}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items())
    if is_main():
        print(f"model in {args.out}" + (f"; held-out {summary}" if summary else ""), file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> None:
    from bertkit.inference import Predictor

    predictor = Predictor(args.model, args.batch_size, bf16=args.bf16, backend=args.backend, onnx_file=args.onnx)
    print(json.dumps(predictor.evaluate(args.data), ensure_ascii=False))


def _predict(args: argparse.Namespace) -> None:
    from bertkit.inference import Predictor, predict_file

    if bool(args.input) == bool(args.texts):
        raise BertkitError("give either --input FILE or texts on the command line")
    if (args.output or args.resume or args.overwrite) and not args.input:
        raise BertkitError("--output, --resume and --overwrite go with --input FILE")
    predictor = Predictor(args.model, args.batch_size, bf16=args.bf16, backend=args.backend, onnx_file=args.onnx)
    if args.input:
        written = predict_file(predictor, args.input, args.output, resume=args.resume, overwrite=args.overwrite)
        if args.output:
            print(f"wrote {written} predictions to {args.output}", file=sys.stderr)
        return
    for prediction in predictor.predict(predictor.from_texts(args.texts)):
        print(json.dumps(prediction, ensure_ascii=False))


def _layers(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers such as -1,-2; got {value!r}") from None


def _add_embedding_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--pooling", choices=["mean", "cls", "max"], default="mean", help="mean and max read real tokens only")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True, help="L2-normalise each embedding")
    parser.add_argument("--layers", type=_layers, default=(-1,), help="layers to average, written --layers=-1,-2 (0: the embeddings; default: the last)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=None, help="truncate texts to this many tokens (default: the model's)")
    parser.add_argument("--text-column", default="text", help="text column of a CSV/TSV/JSONL input")


def _encode_file(args: argparse.Namespace, path: str) -> tuple[list[int], list[str], object]:
    from bertkit.embed import encode, load_encoder, read_texts

    encoder, tokenizer, _ = load_encoder(args.model)
    ids, texts = read_texts(path, args.text_column)
    vectors = encode(encoder, tokenizer, texts, args.pooling, args.normalize, args.layers, args.batch_size, args.max_seq_len)
    return ids, texts, (encoder, tokenizer, vectors)


def _embed(args: argparse.Namespace) -> None:
    from pathlib import Path

    from bertkit.embed import write_embeddings

    output = Path(args.output)
    if output.exists() and not args.overwrite:  # before the model runs, not after
        raise BertkitError(f"{output} already exists; pass --overwrite to replace it")
    ids, _, (_, _, vectors) = _encode_file(args, args.input)
    write_embeddings(output, ids, vectors, overwrite=args.overwrite)
    print(f"wrote {len(ids)} embeddings of size {vectors.shape[1]} to {output}", file=sys.stderr)


def _similar(args: argparse.Namespace) -> None:
    from bertkit.embed import cosine_top_k, encode

    if args.top < 1:
        raise BertkitError(f"--top must be at least 1; got {args.top}")
    ids, texts, (encoder, tokenizer, vectors) = _encode_file(args, args.corpus)
    query = encode(encoder, tokenizer, [args.query], args.pooling, args.normalize, args.layers, 1, args.max_seq_len)[0]
    for index, score in cosine_top_k(query, vectors, args.top):
        print(json.dumps({"id": ids[index], "text": texts[index], "score": score}, ensure_ascii=False))


def _export_onnx(args: argparse.Namespace) -> None:
    from bertkit.export import export_onnx

    result = export_onnx(args.model, args.out, quantize=args.quantize, opset=args.opset)
    check = f"max |onnx - torch| {result.max_abs_diff:.1e} on a held-out batch"
    if result.int8_max_abs_diff is not None:
        check += f" (int8: {result.int8_max_abs_diff:.1e})"
    print(f"wrote {result.path} ({result.quantize or 'fp32'}, {result.size_bytes / 2**20:.1f} MiB, "
          f"outputs {', '.join(result.outputs)}; {check})", file=sys.stderr)


def _serve(args: argparse.Namespace) -> None:
    from bertkit.server import ServerLimits, serve

    limits = ServerLimits(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                          max_texts=args.max_texts, max_chars=args.max_chars)
    serve(args.model, args.host, args.port, limits, threads=args.threads, backend=args.backend, onnx_file=args.onnx)


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: ONNX Runtime on DIR/model.onnx (from `bertkit export onnx`)")
    parser.add_argument("--onnx", default=None, metavar="FILE", help="with --backend onnx: another graph, e.g. the int8 one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="BERT end to end: tokenize, pre-train, fine-tune, serve.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], None], help: str):
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    tokenizer = commands.add_parser("tokenizer", help="WordPiece vocabularies").add_subparsers(
        dest="tokenizer_command", required=True, metavar="COMMAND"
    )
    train = command(tokenizer, "train", _tokenizer_train, "train a WordPiece vocab from plain-text files")
    train.add_argument("--corpus", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    train.add_argument("--out", required=True, help="directory for vocab.txt, tokenizer.json and tokenizer_config.json")
    train.add_argument("--vocab-size", type=int, default=30522)
    train.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")

    finetune = commands.add_parser("finetune", help="fine-tune a pre-trained BERT on a labelled file").add_subparsers(
        dest="task", required=True, metavar="TASK"
    )
    tasks = {
        "classify": "sentence or sentence-pair classification from CSV/TSV/JSONL",
        "ner": "token tagging (NER) from CoNLL or JSONL, BIO or BIOES",
        "qa": "extractive question answering from SQuAD v1.1/v2.0 JSON",
    }
    for name, help_text in tasks.items():
        sub = command(finetune, name, _finetune, help_text)
        sub.add_argument("--train", required=True, help="training file")
        sub.add_argument("--dev", help="dev file: evaluated after each epoch; the best epoch's model is kept")
        sub.add_argument("--out", required=True, help="output model directory")
        sub.add_argument("--model", help="pre-trained model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
        sub.add_argument("--epochs", type=int, default=3)
        sub.add_argument("--batch-size", type=int, default=32)
        sub.add_argument("--eval-batch-size", type=int, default=64)
        sub.add_argument("--lr", type=float, default=5e-5)
        sub.add_argument("--weight-decay", type=float, default=0.01)
        sub.add_argument("--warmup-ratio", type=float, default=0.1)
        sub.add_argument("--max-grad-norm", type=float, default=1.0)
        sub.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
        sub.add_argument("--max-seq-len", dest="max_seq_len", type=int, default=384 if name == "qa" else 128)
        sub.add_argument("--seed", type=int, default=42)
        sub.add_argument("--patience", type=int, default=0, help="stop after N epochs without a better dev score (0: never)")
        sub.add_argument("--no-bf16", action="store_true", help="train in fp32 even where the CPU/GPU has bf16")
        sub.add_argument("--group-by-length", action="store_true",
                         help="batch examples of similar length (faster; default: random batches)")
        sub.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        sub.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
        if name == "classify":
            sub.add_argument("--text-column", default="text")
            sub.add_argument("--text-pair-column", default=None, help="second text of sentence pairs")
            sub.add_argument("--label-column", default="label")
            sub.add_argument("--multi-label", action="store_true", help="labels are lists; sigmoid per label")
        if name == "ner":
            sub.add_argument("--stride", type=int, default=32, help="overlap, in tokens, of windows over long sentences")
        if name == "qa":
            sub.add_argument("--doc-stride", type=int, default=128, help="tokens between the starts of context windows")
            sub.add_argument("--max-query-len", type=int, default=64)
            sub.add_argument("--max-answer-len", type=int, default=30, help="longest answer, in tokens")
            sub.add_argument("--null-threshold", type=float, default=0.0, help="SQuAD 2.0: margin for answering nothing")

    setfit = command(finetune, "setfit", _setfit,
                     "few-shot: contrastive pairs, then a logistic-regression head on the embeddings (same files as classify)")
    setfit.add_argument("--train", required=True, help="training file (CSV/TSV/JSONL, as for classify)")
    setfit.add_argument("--dev", help="dev file, scored once at the end")
    setfit.add_argument("--out", required=True, help="output model directory (a classifier that predicts, serves and exports)")
    setfit.add_argument("--model", help="sentence encoder or any bertkit checkpoint (default: the packaged all-MiniLM-L6-v2)")
    setfit.add_argument("--k", type=int, default=None, help="keep K random examples per class (default: all)")
    setfit.add_argument("--num-pairs", type=int, default=640, help="contrastive pairs in all, half positive, whatever the class count")
    setfit.add_argument("--epochs", type=int, default=1, help="passes over the pairs")
    setfit.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    setfit.add_argument("--lr", type=float, default=2e-5)
    setfit.add_argument("--max-seq-len", type=int, default=128)
    setfit.add_argument("--head-c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    setfit.add_argument("--seed", type=int, default=42)
    setfit.add_argument("--text-column", default="text")
    setfit.add_argument("--label-column", default="label")
    setfit.add_argument("--overwrite", action="store_true", help="replace a model already in --out")

    zeroshot = command(finetune, "zeroshot", _zeroshot,
                       "no training: a classifier by cosine similarity of the text to each label's description")
    zeroshot.add_argument("--labels", required=True, help='a JSON file {"label": "description", ...}')
    zeroshot.add_argument("--out", required=True, help="output model directory")
    zeroshot.add_argument("--model", help="sentence encoder (default: the packaged all-MiniLM-L6-v2)")
    zeroshot.add_argument("--temperature", type=float, default=0.05, help="scores = softmax(cosine / temperature)")
    zeroshot.add_argument("--overwrite", action="store_true", help="replace a model already in --out")

    pre = command(commands, "pretrain", _pretrain, "pre-train BERT (masked LM + next-sentence prediction) on raw text")
    pre.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                     help="UTF-8 text, one sentence per line, a blank line between documents")
    pre.add_argument("--out", required=True)
    pre.add_argument("--tokenizer", help="a tokenizer directory (default: the --model's, or train one with --vocab-size)")
    pre.add_argument("--vocab-size", type=int, help="train a WordPiece vocab of this size on the corpus first")
    pre.add_argument("--model-size", default="tiny", choices=list(MODEL_SIZES))
    pre.add_argument("--config", help="a config.json to start from instead of a named size")
    pre.add_argument("--model", help="continue pre-training this checkpoint (fresh heads where it has none)")
    pre.add_argument("--max-seq-len", type=int, default=128)
    pre.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    pre.add_argument("--batch-size", type=int, default=32)
    pre.add_argument("--lr", type=float, default=1e-4)
    pre.add_argument("--warmup-ratio", type=float, default=0.1)
    pre.add_argument("--weight-decay", type=float, default=0.01)
    pre.add_argument("--grad-accum", type=int, default=1)
    pre.add_argument("--seed", type=int, default=42)
    pre.add_argument("--save-every", type=int, default=200, help="write a resumable state every N steps")
    pre.add_argument("--no-nsp", action="store_true", help="pack full sentences, MLM only (RoBERTa style)")
    pre.add_argument("--whole-word-mask", action="store_true", help="mask whole words (## pieces; jieba words for Chinese)")
    pre.add_argument("--no-bf16", action="store_true")
    pre.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")

    evaluate = command(commands, "evaluate", _evaluate, "score a fine-tuned model on a labelled file (one JSON object)")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--bf16", action="store_true", help="run in bf16 where the hardware has it")
    add_backend_flags(evaluate)

    predict = command(commands, "predict", _predict, "predict with a fine-tuned model (JSON lines, in input order)")
    predict.add_argument("--model", required=True)
    predict.add_argument("--input", help="a .txt file (one text per line) or a file in the training format")
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    predict.add_argument("--output", help="write the JSON lines to this file instead of stdout (with a progress bar)")
    predict.add_argument("--resume", action="store_true",
                         help="continue an interrupted --output file: keep its whole lines, predict the rest")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--bf16", action="store_true", help="run in bf16 where the hardware has it")
    add_backend_flags(predict)

    serve = command(commands, "serve", _serve, "serve a fine-tuned model over HTTP (POST /v1/predict, a web page at /)")
    serve.add_argument("--model", required=True)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch-size", type=int, default=32, help="texts per model batch, gathered across requests")
    serve.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with")
    serve.add_argument("--max-texts", type=int, default=64, help="texts (QA: items) per request; more is refused (413)")
    serve.add_argument("--max-chars", type=int, default=10_000, help="characters per text; longer is refused (413)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    add_backend_flags(serve)

    embed = command(commands, "embed", _embed, "sentence embeddings of a file's texts (.npy rows or JSON lines, input order)")
    embed.add_argument("--input", required=True, help="a .txt file (one text per line) or a CSV/TSV/JSONL file")
    embed.add_argument("--output", required=True, help="F.npy or F.jsonl ({\"id\", \"embedding\"} per line)")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    _add_embedding_flags(embed)

    similar = command(commands, "similar", _similar, "rank a corpus by cosine similarity to a query (JSON lines, best first)")
    similar.add_argument("--corpus", required=True, help="a .txt file (one text per line) or a CSV/TSV/JSONL file")
    similar.add_argument("query", help="the text to compare with")
    similar.add_argument("--top", type=int, default=10, help="how many results")
    _add_embedding_flags(similar)

    export = commands.add_parser("export", help="export a model for other runtimes").add_subparsers(
        dest="export_format", required=True, metavar="FORMAT"
    )
    onnx = command(export, "onnx", _export_onnx,
                   "export a model directory to ONNX (dynamic batch and length), checked against PyTorch")
    onnx.add_argument("--model", required=True, help="model directory (fine-tuned, or a bare encoder)")
    onnx.add_argument("--out", help="the .onnx file to write (default: DIR/model.onnx, where --backend onnx looks)")
    onnx.add_argument("--quantize", choices=["int8"], help="write the int8 graph (dynamically quantized weights) instead of the fp32 one")
    onnx.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")

    demo = command(commands, "demo", _demo, "pre-train a small Chinese BERT, fine-tune it, and compare with no pre-training")
    demo.add_argument("--out", default=None, help="output directory (default: runs/story, or runs/demo with --encoder)")
    demo.add_argument("--pretrain-steps", type=int, default=StoryConfig.pretrain_steps)
    demo.add_argument("--seeds", type=int, nargs="+", default=list(StoryConfig.seeds), help="fine-tuning seeds")
    demo.add_argument("--encoder", action="store_true",
                      help="instead: the one-minute tour of a real BERT (tokenize, encode, similarity, checkpoint round trip)")
    demo.add_argument("--model", default=None, help="with --encoder: model directory or hub id (default: all-MiniLM-L6-v2)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
