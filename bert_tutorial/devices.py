"""Where to compute: MXNet contexts from the command line's ``cpu``/``gpu``, or as the caller gives them."""
from __future__ import annotations

import datetime
import os

import mxnet as mx

from .version import __version__


def as_context_list(ctx) -> list[mx.Context]:
    """``ctx`` (a context or a list of them) as a non-empty list of contexts."""
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
    if not contexts or not all(isinstance(c, mx.Context) for c in contexts):
        raise ValueError(f'ctx must be an mxnet Context or a list of them, got {ctx!r}')
    return contexts


# Where the install page says how to run on a GPU (docs/install.md, section "On a GPU").
GPU_DOCS = 'docs/install.md, "On a GPU"'


def no_gpu_reason() -> str:
    """Why MXNet sees no GPU here, and what to install or check: the ``mxnet`` wheel on PyPI is built without
    CUDA; a CUDA build that sees none needs a driver and a visible device."""
    if not mx.runtime.Features().is_enabled('CUDA'):
        return (f'this MXNet ({mx.__version__}) is built without CUDA (the mxnet wheel on PyPI is CPU-only): for an '
                'NVIDIA GPU replace it with the CUDA build of the same version, e.g. pip uninstall mxnet && pip '
                'install mxnet-cu117==1.9.1, with the CUDA 11 libraries it loads (see '
                f'{GPU_DOCS})')
    return ('this MXNet is built with CUDA but sees no GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES '
            f'(see {GPU_DOCS})')


def default_ctx() -> str:
    """``'gpu'`` when MXNet sees a GPU, else ``'cpu'`` (also when a CUDA build cannot query its driver: the
    command line then still starts, and ``--ctx gpu`` says what is wrong)."""
    try:
        return 'gpu' if mx.context.num_gpus() else 'cpu'
    except mx.base.MXNetError:
        return 'cpu'


def contexts(kind: str) -> list[mx.Context]:
    """``'cpu'``, or every visible GPU for ``'gpu'`` (``ValueError`` saying what to install when there is none)."""
    if kind not in ('cpu', 'gpu'):
        raise ValueError(f"ctx must be 'cpu' or 'gpu', got {kind!r}")
    if kind == 'gpu':
        try:
            n = mx.context.num_gpus()
        except mx.base.MXNetError as err:  # a CUDA build whose driver is missing or too old
            raise ValueError(f'ctx gpu (--ctx gpu): MXNet cannot query the GPUs: {str(err).strip().splitlines()[0]} '
                             f'(see {GPU_DOCS})') from None
        if n == 0:
            raise ValueError(f'ctx gpu (--ctx gpu): no GPU is visible to MXNet: {no_gpu_reason()}; or use --ctx cpu')
        return [mx.gpu(i) for i in range(n)]
    return [mx.cpu()]


# The instruction sets that decide which kernels are fast here (bfloat16 and INT8 dot products, AMX).
CPU_FLAGS_OF_INTEREST = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_int8')


def read_cpuinfo(cpuinfo: str = '/proc/cpuinfo') -> tuple[str, list[str]]:
    """The first CPU's model name and all its flags (sorted) in ``cpuinfo``; ``('unknown', [])`` where there is
    no such file (not Linux)."""
    model, flags = 'unknown', []
    try:
        with open(cpuinfo, encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and model == 'unknown':
                    model = value.strip()
                elif key.strip() == 'flags' and not flags:
                    flags = sorted(set(value.split()))
    except OSError:
        pass  # not Linux: the model stays 'unknown' rather than guessed
    return model, flags


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def machine_description(cpuinfo: str = '/proc/cpuinfo') -> dict:
    """The CPU a figure was measured on, read at run time: ``{'cpu', 'cores', 'flags', 'gpus'}``.

    ``flags`` lists the present members of ``CPU_FLAGS_OF_INTEREST``; the model differs between machines of the
    same kind, so benchmarks record it next to every figure.
    """
    model, flags = read_cpuinfo(cpuinfo)
    return {'cpu': model, 'cores': cores(),
            'flags': [f for f in CPU_FLAGS_OF_INTEREST if f in flags], 'gpus': mx.context.num_gpus()}


def measured() -> dict:
    """When, where and with what a figure is measured: today's date, ``machine_description()`` and the versions of
    the package and MXNet, as every result records."""
    return {'date': datetime.date.today().isoformat(), **machine_description(), 'bert_tutorial': __version__,
            'mxnet': mx.__version__}

