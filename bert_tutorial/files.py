"""Writing files so that a reader never sees half of one, and refusing incomplete folders with one clear error."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout
from mxnet.base import MXNetError


class WriteError(OSError):
    """A file the package writes could not be written (a full disk, a folder where the file goes, no permission):
    one line naming it (``filename``, and the reason as ``strerror``). Its temporary files are removed."""

    def __init__(self, path: str | os.PathLike, reason: str, errno: int | None = None):
        super().__init__(errno, reason, str(path))

    def __str__(self) -> str:
        return f'{self.filename} cannot be written: {self.strerror}'


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turns a failure inside the block (an ``OSError``, or MXNet's ``FileStream.Write incomplete``) into a
    ``WriteError`` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, MXNetError) as err:
        errno = None
        if isinstance(err, OSError):
            reason, errno = err.strerror or str(err), err.errno
        elif 'Write incomplete' in str(err):
            reason = 'the file system is full or refused the write (MXNet: FileStream.Write incomplete)'
        else:  # MXNet's message ends with its own line: "MXNetError: Check failed: ..."
            reason = str(err).strip().splitlines()[-1].removeprefix('MXNetError: ')
        raise WriteError(path, reason, errno) from None


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``path`` under a temporary name of this process, then rename it into place.

    ``content``: text, bytes, or a function that writes the file at the path it is given (e.g.
    ``lambda p: net.save_parameters(str(p))``). A kill mid-write leaves the old file (or none), never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.part')
    try:
        with writing(path):
            if isinstance(content, str):
                tmp.write_text(content, encoding='utf-8')
            elif isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                content(tmp)
            if path.is_dir():  # os.replace would say only "Is a directory"
                raise IsADirectoryError(21, 'a folder is in its place')
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def locked_output(folder: str | os.PathLike) -> Iterator[Path]:
    """``folder`` created and locked for this process while the block runs; a ``ValueError`` at once, before any
    work, when it cannot be written or another process holds it (naming that process). The lock is ``filelock``'s
    advisory ``flock`` on ``folder/.lock``, taken without waiting and released when the process ends, however it
    ends; the file names its holder."""
    folder = Path(folder)
    path = folder / '.lock'
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        lock.acquire(blocking=False)
    except Timeout:
        try:
            holder = path.read_text(encoding='utf-8').strip()
        except OSError:
            holder = ''
        raise ValueError(f'out: {folder} is in use by {holder or "another process"}; wait for that run to end or '
                         'choose another out folder') from None
    except OSError as err:
        raise ValueError(f'out: {folder} cannot be written: {err.strerror or err}') from None
    try:
        path.write_text(f'process {os.getpid()} on {socket.gethostname()}', encoding='utf-8')
        remove_stale_temporaries(folder)
        yield folder
    finally:
        lock.release()


# Temporary names of write_atomic (".NAME.PID.part"), hub.save_model's exports (".model.PID-symbol.json",
# ".model.PID-0000.params") and checkpoint.save_checkpoint's folders (".step-XXXXXXXX.RANDOM", no PID: they are removed
# only under the out folder's lock, which no other run can hold).
_TEMPORARY = re.compile(r'^\.(?:.+\.(?P<pid>\d+)\.part|model\.(?P<export_pid>\d+)-(?:symbol\.json|0000\.params))$')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, subfolders: Sequence[str] = ('checkpoints',)) -> list[Path]:
    """Remove the temporary files that killed writes of the package left in ``folder`` (and its ``subfolders``):
    only names of the package's own patterns, and only those whose process (its id is in the name) is gone.
    Call it on folders the package created and holds the lock of. Returns what it removed."""
    removed = []
    for where in (Path(folder), *(Path(folder) / sub for sub in subfolders)):
        if not where.is_dir() or where.is_symlink():
            continue
        for path in where.iterdir():
            match = _TEMPORARY.match(path.name)
            if match and path.is_file() and not path.is_symlink() \
                    and not _alive(int(match['pid'] or match['export_pid'])):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def resolved_path(path: str | os.PathLike, flag: str) -> Path:
    """``path`` with its links followed; ``ValueError`` naming ``flag`` for a link that leads back to itself (Python's
    ``RuntimeError: Symlink loop``) or one that cannot be followed."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:
        raise ValueError(f'{flag}: {path} cannot be followed ({err}): a symbolic link loop; give another path') \
            from None


def check_out_folder(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Before any work: ``ValueError`` when a recipe's out folder is one of its input folders (the model it starts
    from, a corpus folder) or is, or lies inside, a model folder the package does not write (a Hugging Face
    checkpoint): the run would write its ``config.json`` and ``model.params`` over theirs."""
    resolved = resolved_path(out, 'out (--out)')
    for source in inputs:
        if source is not None and Path(source).is_dir() and resolved == Path(source).resolve():
            raise ValueError(f'out (--out): {out} is an input of this run ({source}); choose another out folder')
    for folder in (resolved, *resolved.parents):
        if (folder / 'config.json').is_file() and any((folder / w).exists() for w in ('model.safetensors',
                                                                                      'pytorch_model.bin')):
            raise ValueError(f'out (--out): {out} lies in the Hugging Face checkpoint folder {folder}; choose '
                             'another out folder')


def check_run_folder(folder: str | os.PathLike, files: Iterable[str], folders: Iterable[str]) -> None:
    """Before any work: ``ValueError`` when something of the wrong kind sits where a run writes ``files`` (a
    folder, say, where ``model.params`` goes) or ``folders`` (a file where ``checkpoints/`` goes)."""
    folder = Path(folder)
    for name in files:
        if (folder / name).is_dir():
            raise ValueError(f'out: {folder / name} is a folder, and the run writes a file there: move it away or '
                             'choose another out folder')
    for name in folders:
        if (folder / name).exists() and not (folder / name).is_dir():
            raise ValueError(f'out: {folder / name} is a file, and the run writes a folder there: move it away or '
                             'choose another out folder')


def check_free_space(folder: str | os.PathLike, params, what: str = 'the run') -> None:
    """Before training: ``ValueError`` when the file system of ``folder`` has less free space than ``what`` surely
    writes: its parameters (``params``, a Gluon ``ParameterDict``) twice, in one checkpoint and in the saved model
    (float32; parameters whose shape is not known yet are not counted; a checkpoint's optimizer states come on top)."""
    size = 0
    for param in params.values():
        shape = param.shape or ()
        if all(shape) and shape:
            size += 4 * math.prod(shape)
    free = shutil.disk_usage(folder).free
    if free < 2 * size:
        raise ValueError(f'out: {folder} has {free / 1e6:.3g} MB free, and {what} writes at least '
                         f'{2 * size / 1e6:.3g} MB (its parameters, in a checkpoint and the saved model): free space '
                         'or choose another out folder')


# What makes a folder a saved model: its config.json beside weights (the package's, 0.1's or Hugging Face's).
_MODEL_WEIGHTS = ('model.params', 'model-0000.params', 'classifier-0000.params', 'model.safetensors',
                  'pytorch_model.bin')


def is_model_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved model (a ``config.json`` and a weights file)."""
    folder = Path(folder)
    return (folder / 'config.json').is_file() and any((folder / w).exists() for w in _MODEL_WEIGHTS)


def _is_export(config: Path) -> bool:
    """Whether ``config`` is the config.json of an export (``inputs``: also bert_tutorial 0.1's)."""
    try:
        data = json.loads(config.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get('model_type') == 'exported_classifier' or 'inputs' in data)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, flag: str, *, inputs: Sequence[str | os.PathLike] = (),
                 overwrite: bool = False, folder: bool = False, default: str | os.PathLike | None = None) -> Path:
    """Before any work, where a command is to write its output (``flag`` names the option): ``ValueError`` when
    ``path`` is one of ``inputs`` or lies inside a saved model's folder (never allowed), when it is a file where a
    folder goes or the other way round, when its parent folder is missing, or when it exists (unless ``overwrite``).

    ``folder``: the output is a folder (an existing empty one is fine; an existing earlier export may be replaced with
    ``overwrite``). ``default``: the command's own default output inside the model folder it reads, which may
    always be replaced.
    """
    path = Path(path)
    resolved = resolved_path(path, flag)
    for source in inputs:
        source = Path(source)
        if _same(path, source) or resolved == source.resolve():
            raise ValueError(f'{flag}: {path} is an input of this command ({source}); choose another path')
    is_default = default is not None and resolved == Path(default).resolve()
    for parent in resolved.parents:
        if is_model_folder(parent) and not is_default:
            raise ValueError(f'{flag}: {path} lies inside the model folder {parent}; write elsewhere')
    if is_default and not resolved.parent.is_dir():
        return path  # the model folder is missing: reading it says so
    if not resolved.parent.is_dir():
        raise ValueError(f'{flag}: the folder {path.parent} does not exist; create it or choose another path')
    if not os.access(resolved.parent, os.W_OK):
        raise ValueError(f'{flag}: the folder {path.parent} cannot be written')
    if not folder:
        if path.is_dir():
            raise ValueError(f'{flag}: {path} is a folder; give a file name')
        if path.exists() and not path.is_file():  # a device, a pipe: the rename would replace it with a file
            raise ValueError(f'{flag}: {path} is not a regular file; give a file name')
        if path.exists() and not (overwrite or is_default):
            raise ValueError(f'{flag}: {path} exists; pass --overwrite to replace it, or choose another path')
        return path
    if path.exists() and not path.is_dir():
        raise ValueError(f'{flag}: {path} is a file, and a folder goes there; choose another path')
    if path.is_dir() and any(path.iterdir()):
        is_export = is_model_folder(path) and _is_export(path / 'config.json')
        if is_model_folder(path) and not is_export:
            raise ValueError(f'{flag}: {path} holds a saved model that is not an export; choose another path')
        if not is_export:
            raise ValueError(f'{flag}: {path} is a folder with files in it; choose a new or empty folder')
        if not (overwrite or is_default):
            raise ValueError(f'{flag}: {path} holds an earlier export; pass --overwrite to replace it, or choose '
                             'another path')
    return path


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
