"""The `bertkit` command: a thin front end over the library modules.

Every user mistake surfaces as a BertkitError and is printed as one line on stderr with exit code 2;
no traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bertkit.errors import BertkitError


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(args.corpus, vocab_size=args.vocab_size, do_lower_case=not args.cased)
    tokenizer.save_pretrained(args.out)
    print(f"wrote a WordPiece vocab of {tokenizer.vocab_size} tokens to {args.out}", file=sys.stderr)


def _demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo

    run_demo(args.model, args.out)


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

    demo = command(commands, "demo", _demo, "load a real BERT, tokenize English and Chinese, run the encoder, round-trip a checkpoint")
    demo.add_argument("--model", default=None, help="model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
    demo.add_argument("--out", default="runs/demo", help="where the demo writes its checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except BertkitError as exc:
        print(f"bertkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
