"""sha256 of files, read in 1 MiB chunks: weight files of several GB are never held in memory whole."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20


def update_with_file(digest, path: Path) -> None:
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path], with_names: bool = False) -> str:
    """One digest over several files in the given order (with each file's name before its bytes, if asked)."""
    digest = hashlib.sha256()
    for path in paths:
        if with_names:
            digest.update(Path(path).name.encode())
        update_with_file(digest, path)
    return digest.hexdigest()
