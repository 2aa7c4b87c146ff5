"""Writes that a crash cannot leave half done: a file or a folder appears whole (temp + rename) or not at all.

Every file Layerscope stores for later (disk-cache entries aside, which diskcache commits itself; lens folders, the
bundled corpus's extracted text, probes) is written through here, so killing the server mid-write leaves either the
old content or nothing that later loads as valid; a leftover temp file or folder starts with ``.tmp-`` and is
never read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

TEMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write tmp`` -> ``p`` holds what was written once the body returns; if the body
    raises, ``p`` is untouched and the temp file is removed. The temp file sits beside ``p`` (same file system, so
    the final ``os.replace`` is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def replace_folder(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder's new content with ``fill(tmp_folder)`` beside it, then swap it in: ``folder`` holds the old
    content or the new, never a mix. If ``fill`` raises, ``folder`` is untouched and the temp folder removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + folder.name + ".", dir=folder.parent))
    old = None
    try:
        fill(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + folder.name + ".old.", dir=folder.parent))
            old.rmdir()
            os.replace(folder, old)  # a crash between the two renames leaves no folder: read as "not stored"
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return folder
