"""`bertkit pretrain`: masked LM (+ next-sentence prediction) from raw text, from scratch or continued.

The corpus is tokenized once into on-disk shards (reused by later runs), cut into NSP pairs or packed
sequences, and masked afresh every time a sequence is seen. A few documents are held out to report
MLM and NSP accuracy. The output directory is a Hugging Face `BertForPreTraining` checkpoint, ready
for `bertkit finetune --model`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertkit import dist
from bertkit.batching import IGNORE_INDEX, Feature
from bertkit.checkpoint import load_model, refuse_to_replace_model, resolve_model_dir, save_model
from bertkit.data.pretrain import Instance, Shards, create_instances, pretraining_collate
from bertkit.errors import BertkitError
from bertkit.heads import BertForPreTraining
from bertkit.config import MODEL_SIZES, BertConfig
from bertkit.options import Options, option
from bertkit.tokenizer import BertTokenizer, train_tokenizer
from bertkit.trainer import History, Trainer, TrainConfig, set_seed

HELD_OUT_FRACTION = 0.02  # of the documents, for the MLM/NSP accuracy report
MIN_DOCUMENTS_FOR_EVAL = 10


TRAIN_DEFAULTS = {"epochs": 1, "lr": 1e-4, "max_steps": 1000, "save_every": 200}  # pre-training's own, where they differ from fine-tuning's


@dataclass
class PretrainSettings(Options):
    """What `bertkit pretrain` takes besides the training settings (`train`), each a flag and a keyword."""

    corpus: list[str] = option(help="UTF-8 text, one sentence per line, a blank line between documents", metavar="FILE")
    out: str = option(help="output model directory")
    tokenizer: str | None = option(None, "a tokenizer directory (default: the --model's, or train one with --vocab-size)")
    vocab_size: int | None = option(None, "train a WordPiece vocab of this size on the corpus first", min=10)
    model_size: str = option("tiny", "a named size", choices=MODEL_SIZES)
    config: str | None = option(None, "a config.json to start from instead of a named size")
    model: str | None = option(None, "continue pre-training this checkpoint (fresh heads where it has none)")
    max_seq_len: int = option(128, "longest sequence, in tokens", min=8)
    steps: int | None = option(None, f"optimizer steps (default: {TRAIN_DEFAULTS['max_steps']})", min=1)
    nsp: bool = option(True, "pack full sentences, MLM only (RoBERTa style)")
    whole_word_mask: bool = option(False, "mask whole words (## pieces; jieba words for Chinese)")
    chinese_words: bool | None = None  # None: decided from the corpus
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))
    resume: bool = option(False, "continue an interrupted run in --out")
    overwrite: bool = option(False, "replace a model already in --out")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model and self.config:
            raise BertkitError("give at most one of --model and --config")
        if self.steps is not None:  # the run's length, as a keyword of its own (train.max_steps otherwise)
            self.train = dataclasses.replace(self.train, max_steps=self.steps)


def _tokenizer(settings: PretrainSettings, model_dir: Path | None) -> BertTokenizer:
    if settings.tokenizer:
        return BertTokenizer.from_pretrained(settings.tokenizer)
    if model_dir is not None:
        return BertTokenizer.from_pretrained(model_dir)
    if settings.vocab_size is None:
        raise BertkitError("give --tokenizer DIR, --model DIR, or --vocab-size N to train a WordPiece vocab on the corpus")
    out = Path(settings.out)
    if settings.resume and (out / "vocab.txt").is_file():
        # Vocab training breaks frequency ties in no fixed order: a resumed run must reuse the vocab it had.
        return BertTokenizer.from_pretrained(out)
    tokenizer = train_tokenizer(settings.corpus, settings.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return tokenizer


def _model(settings: PretrainSettings, model_dir: Path | None, tokenizer: BertTokenizer) -> BertForPreTraining:
    if model_dir is not None:
        model, report = load_model(model_dir, "BertForPreTraining")
        if report.fresh:
            print(f"starting fresh: {', '.join(sorted({k.split('.')[0] for k in report.fresh}))} head(s)")
    else:
        if settings.config:
            config = BertConfig.from_json_file(settings.config)
            config.vocab_size = tokenizer.vocab_size
        else:
            config = BertConfig.from_size(settings.model_size, tokenizer.vocab_size,
                                          max_position_embeddings=max(512, settings.max_seq_len))
        model = BertForPreTraining(config)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise BertkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {model.config.vocab_size}")
    if settings.max_seq_len > model.config.max_position_embeddings:
        raise BertkitError(f"--max-seq-len {settings.max_seq_len} exceeds the model's max_position_embeddings "
                           f"{model.config.max_position_embeddings}")
    return model


def _split_documents(num_documents: int, nsp: bool) -> tuple[range, range | None]:
    """Training documents and held-out ones (None when the corpus is too small to spare any)."""
    if num_documents < MIN_DOCUMENTS_FOR_EVAL:
        return range(num_documents), None
    held = max(2 if nsp else 1, round(num_documents * HELD_OUT_FRACTION))
    return range(num_documents - held), range(num_documents - held, num_documents)


def _as_features(instances: list[Instance]) -> list[Feature]:
    # The trainer reads lengths from input_ids; the collate function needs the whole instance.
    return [{"input_ids": i.tokens, "instance": i} for i in instances]


def held_out_batches(
    held: list[Instance], tokenizer: BertTokenizer, batch_size: int, whole_word: bool
) -> Iterator[dict[str, torch.Tensor]]:
    """The held-out instances in batches, masked the same way every time (each batch seeded by its start)."""
    for start in range(0, len(held), batch_size):
        generator = torch.Generator().manual_seed(start)
        yield pretraining_collate(held[start : start + batch_size], tokenizer, generator, whole_word)


def masked_lm_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and accuracies of one batch, scoring the masked positions only."""
    out = model(**batch, masked_only=True)
    labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
    logs = {"mlm_loss": out.mlm_loss.item(), "mlm_acc": (out.mlm_logits.argmax(-1) == labels).float().mean().item()}
    if out.nsp_loss is not None:
        nsp_labels = batch["next_sentence_label"]
        logs.update(nsp_loss=out.nsp_loss.item(), nsp_acc=(out.nsp_logits.argmax(-1) == nsp_labels).float().mean().item())
    return out.loss, logs


def pretrain(settings: PretrainSettings) -> History:
    """Run pre-training; every input is checked before anything is written under `settings.out`."""
    set_seed(settings.train.seed)
    rank, _, _ = dist.init()
    model_dir = resolve_model_dir(settings.model) if settings.model else None
    out = Path(settings.out)
    refuse_to_replace_model(out, settings.overwrite, settings.resume)
    if settings.resume and not (out / "trainer_state" / "state.pt").is_file():
        raise BertkitError(f"--resume: nothing to resume in {out} (no trainer_state/state.pt)")
    # Under torchrun, rank 0 alone trains the vocab and builds the shards; the others then read them.
    if rank == 0:
        tokenizer = _tokenizer(settings, model_dir)
        # Word boundaries (jieba for Chinese) cost time at build and matter only to whole-word masking.
        chinese_words = settings.chinese_words if settings.whole_word_mask else False
        shards = Shards.open_or_build(settings.corpus, tokenizer, out / "shards", chinese_words=chinese_words)
    dist.barrier()
    if rank != 0:
        trained_here = not (settings.tokenizer or model_dir)
        tokenizer = BertTokenizer.from_pretrained(out) if trained_here else _tokenizer(settings, model_dir)
        shards = Shards.open(out / "shards")
    model = _model(settings, model_dir, tokenizer)
    train_docs, held_docs = _split_documents(shards.num_documents, settings.nsp)
    rng = random.Random(settings.train.seed)
    train = create_instances(shards, settings.max_seq_len, rng, nsp=settings.nsp, documents=train_docs)
    held = create_instances(shards, settings.max_seq_len, rng, nsp=settings.nsp, documents=held_docs) if held_docs else []
    if rank == 0:
        print(f"{shards.num_documents} documents, {len(shards.tokens)} tokens; {len(train)} training sequences, "
              f"{len(held)} held out")

    def collate_fn(features: list[Feature], seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return pretraining_collate([f["instance"] for f in features], tokenizer, generator, settings.whole_word_mask)

    def evaluate(trained: torch.nn.Module) -> dict[str, Any]:
        totals: dict[str, float] = {}
        batches = 0
        size = settings.train.batch_size
        device = next(trained.parameters()).device
        for batch in held_out_batches(held, tokenizer, size, settings.whole_word_mask):
            _, logs = masked_lm_step(trained, {k: v.to(device) for k, v in batch.items()})
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + value
            batches += 1
        return {key.replace("_acc", "_accuracy"): value / batches for key, value in totals.items()}

    def save(trained: torch.nn.Module, directory: Path) -> None:
        save_model(trained, directory)
        tokenizer.save_pretrained(directory)

    trainer = Trainer(
        model, _as_features(train), settings.train, out, tokenizer.pad_token_id, save,
        evaluate=evaluate if held else None, main_metric="mlm_accuracy" if held else None,
        collate_fn=collate_fn, loss_fn=masked_lm_step,
        find_unused_parameters=not settings.nsp,  # without NSP the NSP head and pooler get no gradient
    )
    return trainer.fit(resume=settings.resume)
