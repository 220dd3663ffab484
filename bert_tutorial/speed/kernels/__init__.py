"""The package's C++ operators (``bert_kernels.cc``), compiled on first use and loaded into MXNet.

The library is built with the machine's C++ compiler (``$CXX``, default ``g++``) against the external-operator
API that ships in the MXNet wheel (``mxnet/include/mxnet/lib_api.h`` and ``mxnet/src/lib_api.cc``), into
``$MXNET_HOME/bert_tutorial/kernels/<key>/libbert_kernels.so`` where ``key`` hashes the sources, the MXNet version,
the compiler and its flags. The flags are portable (no ``-march=native``): the hot loops carry AVX-512, AVX2 and
baseline versions chosen when the library loads, so one cache serves machines with different CPUs.

Without a compiler, when the build or the load fails, or with ``BERT_TUTORIAL_KERNELS=off``, ``load_kernels``
returns ``False`` and the package runs on MXNet's own operators. Either way one log line says which path runs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import mxnet as mx

from ...assets import mxnet_home

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name('bert_kernels.cc')
LIBRARY_NAME = 'libbert_kernels.so'
ENV_SWITCH = 'BERT_TUTORIAL_KERNELS'
# No FMA contraction: every ISA version of a loop rounds the same way (and dx is exactly 0 where it should be).
# No errno from sqrt: with it GCC keeps a scalar sqrtf call in the Adam loop, which then runs 4x slower (sqrt is
# correctly rounded either way).
FLAGS = ('-std=c++17', '-O3', '-ffp-contract=off', '-fno-math-errno', '-fPIC', '-shared', '-fopenmp')
BUILD_TIMEOUT = 600  # seconds; a build takes about 10 s on 2 cores

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


def build(compiler: str) -> Path:
    """Compile the library into the cache unless it is there; its path. ``RuntimeError`` with the compiler's
    message when the build fails."""
    target = library_path(compiler)
    if target.is_file():
        return target
    include, lib_api = _mxnet_api()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build under a private name and rename: processes building at the same time never load a partial file.
    partial = target.with_name(f'{LIBRARY_NAME}.{os.getpid()}.partial')
    command = [compiler, *FLAGS, f'-I{include}', str(SOURCE), str(lib_api), '-o', str(partial)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f'{compiler} failed ({done.returncode}): {lines[-1] if lines else "no message"}')
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


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
            path = build(compiler)
            mx.library.load(str(path), verbose=False)
        except (OSError, RuntimeError, subprocess.SubprocessError, mx.base.MXNetError) as err:
            log.warning('bert_tutorial kernels: pure MXNet operators (the C++ kernels did not build or load: %s)',
                        str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            return False
        _state = str(path)
        log.info('bert_tutorial kernels: C++ kernels from %s', path)
    return bool(_state)


BLAS_SWITCH = 'BERT_TUTORIAL_BLAS'
_dense: bool | None = None


def numpy_openblas() -> Path | None:
    """The OpenBLAS that numpy's wheel ships (``numpy.libs/libopenblas*.so``), ``None`` when there is none (numpy
    built against a system BLAS, another platform)."""
    import numpy
    found = sorted((Path(numpy.__file__).parent.parent / 'numpy.libs').glob('libopenblas*.so*'))
    return found[0] if found else None


def dense_available() -> bool:
    """Whether ``bert_fc`` runs here: the kernels are loaded and the CBLAS library ``$BERT_TUTORIAL_BLAS`` names
    (by default numpy's OpenBLAS) opens and has ``cblas_sgemm``. Decided once per process, with a log line when
    it does not."""
    global _dense
    if _dense is None:
        _dense = False
        if not load_kernels():
            return False
        if not os.environ.get(BLAS_SWITCH):
            blas = numpy_openblas()
            if blas is None:
                log.info('bert_tutorial kernels: no bert_fc (numpy ships no OpenBLAS here; set %s to a CBLAS '
                         'library)', BLAS_SWITCH)
                return False
            os.environ[BLAS_SWITCH] = str(blas)  # read by the library when bert_fc is first called
        try:
            mx.nd.bert_fc(mx.nd.ones((1, 1)), mx.nd.ones((1, 1)), mx.nd.zeros((1,))).wait_to_read()
        except mx.base.MXNetError as err:
            log.warning('bert_tutorial kernels: no bert_fc (%s)', str(err).strip().splitlines()[-1])
            return False
        _dense = True
    return _dense


def loaded_library() -> Path | None:
    """The path of the loaded library, ``None`` on the pure-MXNet path or before ``load_kernels``."""
    return Path(_state) if _state else None
