"""Writing files so that a reader never sees half of one, and refusing incomplete folders with one clear error."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterable, Iterator
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


@contextlib.contextmanager
def locked_output(folder: str | os.PathLike) -> Iterator[Path]:
    """``folder`` created and locked for this process while the block runs; a ``ValueError`` at once, before any
    work, when it cannot be written or another process holds it (naming that process). The lock is an advisory
    ``flock`` on ``folder/.lock``, released when the process ends, however it ends."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / '.lock', 'a+')
    except OSError as err:
        raise ValueError(f'out: {folder} cannot be written: {err.strerror or err}') from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or 'another process'
            raise ValueError(f'out: {folder} is in use by {holder}; wait for that run to end or choose another '
                             'out folder') from None
        handle.seek(0)
        handle.truncate()
        handle.write(f'process {os.getpid()} on {socket.gethostname()}')
        handle.flush()
        yield folder


def require_files(folder: str | os.PathLike, names: Iterable[str], what: str, how: str) -> Path:
    """``folder`` as a ``Path`` when it holds every file of ``names``; else ``FileNotFoundError`` naming the missing
    ones, what the folder should be (``what``) and how to make one (``how``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileNotFoundError(f'{folder} is a file, not a folder: expected {what} ({how})')
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} does not exist: expected {what} ({how})')
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f'{folder} is not {what}: {", ".join(missing)} missing ({how})')
    return folder
