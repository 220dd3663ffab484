"""The package's C++ operators (``bert_kernels.cc``), compiled on first use and loaded into MXNet.

The library is built with the machine's C++ compiler (``$CXX``, default ``g++``) against the external-operator
API that ships in the MXNet wheel (``mxnet/include/mxnet/lib_api.h`` and ``mxnet/src/lib_api.cc``), into
``$MXNET_HOME/bert_tutorial/kernels/<key>/libbert_kernels.so`` where ``key`` hashes the sources, the MXNet version,
the compiler and its flags. The flags are portable (no ``-march=native``): the hot loops carry AVX-512, AVX2 and
baseline versions chosen when the library loads, so one cache serves machines with different CPUs.

The first build says so in a log line before it starts (it takes 10-30 s). A checksum file written after the build
(``libbert_kernels.so.sha256``) is checked before every load: a damaged cached library (cut short, overwritten) is
rebuilt once, never loaded (a truncated shared library kills the process with a bus error when it is mapped).

Without a compiler, when the build or the load fails, or with ``BERT_TUTORIAL_KERNELS=off``, ``load_kernels``
returns ``False`` and the package runs on MXNet's own operators. Either way one log line says which path runs.
Which of the loaded kernels run is decided per machine by ``speed.choice``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import mxnet as mx

from ...assets import directory_lock, mxnet_home, sha256_file
from ...files import write_atomic

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name('bert_kernels.cc')
LIBRARY_NAME = 'libbert_kernels.so'
ENV_SWITCH = 'BERT_TUTORIAL_KERNELS'
# No FMA contraction: every ISA version of a loop rounds the same way (and dx is exactly 0 where it should be).
# No errno from sqrt: with it GCC keeps a scalar sqrtf call in the Adam loop, which then runs 4x slower (sqrt is
# correctly rounded either way).
FLAGS = ('-std=c++17', '-O3', '-ffp-contract=off', '-fno-math-errno', '-fPIC', '-shared', '-fopenmp')
BUILD_TIMEOUT = 600  # seconds; a build takes 10-30 s on 2 cores
CHECKSUM_SUFFIX = '.sha256'  # next to the library: the sha256 of its bytes, written after the build

_OFF, _ON = ('off', '0', 'false', 'no'), ('', 'on', 'auto', '1', 'true', 'yes')
# None: not tried yet; else the loaded library's path, or '' for the pure-MXNet path (decided once per process:
# MXNet cannot unload a library).
_state: str | None = None


def library_operators(graph: dict) -> list[str]:
    """The operators of this library in a graph's JSON (``symbol.tojson()``, an export's ``-symbol.json``): an
    exported graph must have none, so that it loads with MXNet alone."""
    return sorted({node['op'] for node in graph['nodes'] if node['op'].startswith('bert_')})


def kernels_enabled() -> bool:
    """Whether ``$BERT_TUTORIAL_KERNELS`` allows the C++ kernels (unset, ``on``, ``auto``, ``1``: yes;
    ``off``, ``0``: no)."""
    value = os.environ.get(ENV_SWITCH, '').strip().lower()
    if value not in _OFF + _ON:
        raise ValueError(f'{ENV_SWITCH} must be one of on, off, auto, 1, 0; got {os.environ[ENV_SWITCH]!r}')
    return value not in _OFF


def _mxnet_api() -> tuple[Path, Path]:
    root = Path(mx.__file__).parent
    return root / 'include', root / 'src' / 'lib_api.cc'


def _compiler() -> str | None:
    return shutil.which(os.environ.get('CXX') or 'g++')


def library_path(compiler: str) -> Path:
    """Where the library built by ``compiler`` lives in the cache (the key covers everything the binary depends
    on: sources, MXNet version and API files, compiler version, flags, architecture)."""
    include, lib_api = _mxnet_api()
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True, timeout=60).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), (include / 'mxnet' / 'lib_api.h').read_bytes(), lib_api.read_bytes(),
                 mx.__version__.encode(), version.encode(), ' '.join(FLAGS).encode(), platform.machine().encode()):
        digest.update(hashlib.sha256(part).digest())
    return mxnet_home() / 'bert_tutorial' / 'kernels' / digest.hexdigest()[:16] / LIBRARY_NAME


def checksum_path(library: Path) -> Path:
    """The file holding the sha256 of ``library``'s bytes, written after the build."""
    return library.with_name(library.name + CHECKSUM_SUFFIX)


def verified(library: Path) -> bool:
    """Whether ``library`` is there and its bytes match the checksum written after it was built (a library without
    a checksum, from before 0.5 or from a build killed between the two writes, does not pass)."""
    try:
        return checksum_path(library).read_text().strip() == sha256_file(library)
    except OSError:
        return False


def build(compiler: str) -> Path:
    """Compile the library into the cache unless a verified copy is there (a damaged one is rebuilt); its path.
    ``RuntimeError`` with the compiler's message when the build fails, or when the rebuilt file does not verify."""
    target = library_path(compiler)
    if verified(target):
        return target
    # One build at a time (workers of a cluster starting together): the others wait, then find it built.
    with directory_lock(target.parent):
        return target if verified(target) else _build(compiler, target)


def _build(compiler: str, target: Path) -> Path:
    if target.exists():
        log.warning('bert_tutorial kernels: the cached %s does not match its checksum (damaged, cut short or from '
                    'an older version): rebuilding it', target)
    include, lib_api = _mxnet_api()
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info('bert_tutorial kernels: compiling the C++ kernels with %s (once per machine, MXNet version and '
             'compiler; 10-30 s on 2 cores) into %s', compiler, target.parent)
    started = time.monotonic()
    checksum = ''

    def compile_into(partial: Path) -> None:
        nonlocal checksum
        command = [compiler, *FLAGS, f'-I{include}', str(SOURCE), str(lib_api), '-o', str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f'{compiler} failed ({done.returncode}): {lines[-1] if lines else "no message"}')
        checksum = sha256_file(partial)  # of what the compiler wrote, before it moves into place

    # Built under a private name and renamed: a process never loads a partial file.
    write_atomic(target, compile_into)
    # After the library: a library without its checksum (a build killed in between) is rebuilt, never trusted.
    write_atomic(checksum_path(target), checksum + '\n')
    if not verified(target):  # another process replaced it in between, or the disk does not keep what it wrote
        raise RuntimeError(f'{target} does not match its checksum right after the build')
    log.info('bert_tutorial kernels: built in %.0f s', time.monotonic() - started)
    return target


def error_line(err: BaseException) -> str:
    """One line for a log or an error message from an exception, MXNet's included: an ``MXNetError`` from an
    external operator (``Traceback ... Extension Traceback: [0] .../bert_kernels.cc[1247]: bert_fc: ...``) gives
    the operator's own latest message (``bert_fc: ...``), others their last non-empty line."""
    text = str(err).strip()
    ours = re.findall(r'\[\d+\] \S+\[\d+\]: (.+)', text)
    if ours:  # the library's messages pile up from call to call (MXNet never clears them): the last is this one
        return ours[-1].strip()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith(('Traceback', '  File', 'Stack trace'))]
    # MXNet's errors end with their reason; "MXNetError: " is the class name, not news to the reader
    return re.sub(r'^MXNetError: ', '', lines[-1]) if lines else type(err).__name__


def load_kernels() -> bool:
    """Build (first time) and load the C++ operators: ``True`` when ``mx.nd.bert_layer_norm`` and
    ``mx.nd.bert_dropout`` are available, ``False`` for the pure-MXNet path. Decided once per process; logs one
    line saying which path runs."""
    global _state
    if _state is None:
        _state = ''
        if not kernels_enabled():
            log.info('bert_tutorial kernels: pure MXNet operators (%s=off)', ENV_SWITCH)
            return False
        compiler = _compiler()
        if compiler is None:
            log.warning('bert_tutorial kernels: pure MXNet operators (no C++ compiler: %s not found)',
                        os.environ.get('CXX') or 'g++')
            return False
        try:
            include, lib_api = _mxnet_api()
            if not ((include / 'mxnet' / 'lib_api.h').is_file() and lib_api.is_file()):
                raise RuntimeError('this MXNet has no lib_api.h/lib_api.cc')
            path = build(compiler)  # verified against its checksum: mapping a cut file is a bus error
            mx.library.load(str(path), verbose=False)
        except (OSError, RuntimeError, subprocess.SubprocessError, mx.base.MXNetError) as err:
            log.warning('bert_tutorial kernels: pure MXNet operators (the C++ kernels did not build or load: %s)',
                        error_line(err))
            return False
        _state = str(path)
        log.debug('bert_tutorial kernels: C++ kernels from %s', path)  # accelerate's line says what runs
    return bool(_state)


BLAS_SWITCH = 'BERT_TUTORIAL_BLAS'
# The CBLAS sgemm symbols bert_fc looks for, in this order (ILP64 first): OpenBLAS's own names, and those of the
# scipy-openblas wheels, which prefix every symbol with scipy_.
SGEMM_SYMBOLS = ('cblas_sgemm64_', 'scipy_cblas_sgemm64_', 'cblas_sgemm', 'scipy_cblas_sgemm')
_dense: bool | None = None
_dense_blas: str | None = None


def scipy_openblas() -> Path | None:
    """The OpenBLAS of the ``scipy-openblas32`` wheel (a requirement: a current OpenBLAS, built for packages to
    ship, which knows today's CPUs), ``None`` when it is not installed. Found without importing the package, which
    would load the library at once."""
    spec = importlib.util.find_spec('scipy_openblas32')
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted((Path(list(spec.submodule_search_locations)[0]) / 'lib').glob('libscipy_openblas*.so*'))
    return found[0] if found else None


def numpy_openblas() -> Path | None:
    """The OpenBLAS that numpy's wheel ships (``numpy.libs/libopenblas*.so``), ``None`` when there is none (numpy
    built against a system BLAS, another platform). numpy 1.23.5's is OpenBLAS 0.3.20, which runs its slowest
    (Prescott) kernels on CPUs newer than it: only a last resort."""
    import numpy
    found = sorted((Path(numpy.__file__).parent.parent / 'numpy.libs').glob('libopenblas*.so*'))
    return found[0] if found else None


def default_blas() -> Path | None:
    """The CBLAS library ``bert_fc`` runs on unless ``$BERT_TUTORIAL_BLAS`` names one: scipy-openblas32's
    OpenBLAS, else numpy's."""
    return scipy_openblas() or numpy_openblas()


def blas_path() -> str | None:
    """The CBLAS library ``bert_fc`` uses (or would use) here: ``$BERT_TUTORIAL_BLAS``, else ``default_blas()``."""
    chosen = os.environ.get(BLAS_SWITCH) or default_blas()
    return str(chosen) if chosen else None


def blas_problem(path: str) -> str | None:
    """Why ``bert_fc`` cannot run on the library at ``path`` (it does not open, or has no CBLAS ``sgemm`` under
    any of ``SGEMM_SYMBOLS``), ``None`` when it can: the same test the library makes, from Python, so that the
    message is one clean line."""
    import ctypes
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    except OSError as err:
        return f'cannot open {path} ({str(err).replace(f"{path}: ", "")})'
    if not any(hasattr(lib, name) for name in SGEMM_SYMBOLS):
        return f'{path} has no CBLAS sgemm (none of {", ".join(SGEMM_SYMBOLS)})'
    return None


def dense_available() -> bool:
    """Whether ``bert_fc`` runs here: the kernels are loaded and the CBLAS library ``$BERT_TUTORIAL_BLAS`` names
    (by default scipy-openblas32's OpenBLAS, else numpy's) opens and has ``sgemm``. Decided once per process, with a
    log line when it does not."""
    global _dense, _dense_blas
    if _dense is None:
        _dense = False
        if not load_kernels():
            return False
        if not os.environ.get(BLAS_SWITCH):
            blas = default_blas()
            if blas is None:
                log.info('bert_tutorial kernels: no bert_fc (neither scipy-openblas32 nor numpy ships an OpenBLAS '
                         'here; set %s to a CBLAS library)', BLAS_SWITCH)
                return False
            os.environ[BLAS_SWITCH] = str(blas)  # read by the library when bert_fc is first called
        problem = blas_problem(os.environ[BLAS_SWITCH])
        if problem is not None:
            log.warning('bert_tutorial kernels: no bert_fc (%s)', problem)
            return False
        try:
            mx.nd.bert_fc(mx.nd.ones((1, 1)), mx.nd.ones((1, 1)), mx.nd.zeros((1,))).wait_to_read()
        except mx.base.MXNetError as err:
            log.warning('bert_tutorial kernels: no bert_fc (%s)', error_line(err))
            return False
        _dense, _dense_blas = True, os.environ[BLAS_SWITCH]
    return _dense


def dense_blas() -> str | None:
    """The CBLAS library ``bert_fc`` runs on, once ``dense_available()`` said it can run; else ``None``."""
    return _dense_blas if _dense else None


def loaded_library() -> Path | None:
    """The path of the loaded library, ``None`` on the pure-MXNet path or before ``load_kernels``."""
    return Path(_state) if _state else None
