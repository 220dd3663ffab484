"""Writing files so that a reader never sees half of one, and refusing incomplete folders with one clear error."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``path`` under a temporary name of this process, then rename it into place.

    ``content``: text, bytes, or a function that writes the file at the path it is given (e.g.
    ``lambda p: net.save_parameters(str(p))``). A kill mid-write leaves the old file (or none), never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.part')
    try:
        if isinstance(content, str):
            tmp.write_text(content, encoding='utf-8')
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def require_files(folder: str | os.PathLike, names: Iterable[str], what: str, how: str) -> Path:
    """``folder`` as a ``Path`` when it holds every file of ``names``; else ``FileNotFoundError`` naming the missing
    ones, what the folder should be (``what``) and how to make one (``how``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} does not exist: expected {what} ({how})')
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f'{folder} is not {what}: {", ".join(missing)} missing ({how})')
    return folder
