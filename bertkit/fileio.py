"""Atomic writes: a file appears under its name complete, or not at all.

Every writer goes through `atomic_path`: the data goes to a temporary file in the target's directory
(one file system, so the final rename is atomic) whose name starts with TEMP_PREFIX. A process killed
mid-write leaves such a file behind; `remove_debris` deletes them when a writer starts on a directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.errors import BertkitError

TEMP_PREFIX = ".bertkit-tmp-"
# `tmp*.tmp` is what save_model's temporary files were called before this module existed.
_DEBRIS_PATTERNS = (TEMP_PREFIX + "*", "tmp*.tmp")


@contextmanager
def temp_path(directory: str | os.PathLike, name: str = "") -> Iterator[Path]:
    """A new empty file in `directory`, removed on exit whatever happens; `name` makes debris readable."""
    try:
        fd, raw = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=f"-{name}" if name else "")
    except OSError as exc:
        raise BertkitError(f"{directory}: cannot write there ({exc.strerror or exc})") from None
    os.close(fd)
    path = Path(raw)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; it is renamed to `path` if the block succeeds."""
    path = Path(path)
    with temp_path(path.parent, path.name) as tmp:
        yield tmp
        tmp.chmod(0o644)  # temporary files are private; what bertkit writes is meant to be shared
        os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_debris(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in `directory`; returns what was removed.

    Call it only where one writer owns the directory: another process's temporary file in progress
    looks the same as debris.
    """
    removed = []
    for pattern in _DEBRIS_PATTERNS:
        for path in Path(directory).glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
