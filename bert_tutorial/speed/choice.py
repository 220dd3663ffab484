"""Which C++ kernels run on this machine: each operator kernel is used only where it beats MXNet's own operator here.

A kernel that is fast on one CPU can be slow on another (``bert_fc`` on OpenBLAS beat oneDNN's ``FullyConnected`` on
an AMD EPYC and lost to it on an Intel Xeon with AMX), so the first use on a machine times every operator kernel
against the operator that runs without it, at BERT-like sizes (32 x 32 tokens of 384 units, 1536 hidden, 12 heads),
forward and backward, in interleaved rounds (a few seconds in all; more rounds for the quick operators), once on the
machine as it is and once with one core kept busy by another process, and keeps a kernel only when its best time is
at most ``MARGIN`` (90%) of the other's both times. The second pass is there because these machines are shared: on an
Intel Xeon (2026-12-07) ``bert_fc``'s OpenBLAS won the dense layers by 1.7x on a quiet machine and trained at half
the speed of MXNet's ``FullyConnected`` while another process ran (its thread pool waits on each thread in turn).
The decision is cached next to the library
(``choice.json``) with the CPU model, its flags, the thread count and the BLAS, and measured again when any of them
changes.

``$BERT_TUTORIAL_KERNEL_CHOICE`` overrides it: ``all`` (every kernel that loads), ``none`` (MXNet's operators, and
``MatmulLayerNorm`` for LayerNorm), or a comma-separated list of ``OPERATOR=on`` / ``OPERATOR=off`` that forces those
and measures the rest, optionally after ``all`` or ``none`` as the base (``none,layer_norm=on``). Dropout is never
chosen here: its masks are part of a run's identity (``kernel_dropout``).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ..devices import cores, read_cpuinfo
from ..files import write_atomic
from .kernels import (
    blas_path,
    dense_available,
    dense_blas,
    directory_lock,
    load_kernels,
    loaded_library,
)

log = logging.getLogger(__name__)

# The operator kernels chosen by measurement, by the names use_kernels and the optimizer know them.
OPERATORS = ('layer_norm', 'softmax', 'gelu', 'attention', 'dense', 'adam', 'grad_norm')
CHOICE_SWITCH = 'BERT_TUTORIAL_KERNEL_CHOICE'
CHOICE_FILE = 'choice.json'
# A kernel is kept when its median time is at most this share of the other operator's: at least 10% faster.
MARGIN = 0.9
ROUNDS, MAX_ROUNDS, BUDGET = 5, 100, 0.4  # rounds per operator, at least and at most; seconds per operator
FORMAT = 2  # of choice.json; a new measurement when it changes (2: the pass with one core busy)
CPUINFO = '/proc/cpuinfo'

# BERT-like sizes: a batch of 32 sequences of 32 tokens, BERT-small/MiniLM widths.
BATCH, TOKENS, UNITS, HIDDEN, HEADS = 32, 32, 384, 1536, 12

_measured: dict | None = None  # this process's decision before the override: {'kernels', 'timings', ...}


def parse_override(value: str | None) -> dict[str, bool]:
    """The operators ``$BERT_TUTORIAL_KERNEL_CHOICE`` forces on (``True``) or off (``False``); the ones it does not
    name are measured. ``ValueError`` naming the variable and what it accepts."""
    forced: dict[str, bool] = {}
    items = [item.strip().lower() for item in (value or '').split(',') if item.strip()]
    for position, item in enumerate(items):
        if item in ('all', 'none', 'auto') and position == 0:
            if item != 'auto':
                forced = dict.fromkeys(OPERATORS, item == 'all')
            continue
        op, _, state = item.partition('=')
        if op.strip() not in OPERATORS or state.strip() not in ('on', 'off'):
            raise ValueError(f'{CHOICE_SWITCH}={value!r}: {item!r} is not OPERATOR=on or OPERATOR=off; it takes all, '
                             f'none or auto, then (comma-separated) OPERATOR=on|off with OPERATOR one of '
                             f'{", ".join(OPERATORS)}')
        forced[op.strip()] = state.strip() == 'on'
    return forced


def decide(timings: Mapping[str, Sequence[tuple[float, float]]], margin: float = MARGIN) -> dict[str, bool]:
    """For each operator, whether its kernel wins: ``timings[op]`` is a list of ``(kernel seconds, other seconds)``
    pairs, one per round; the kernel wins when its best time is at most ``margin`` times the other's best. The best
    of the rounds, not their median: on a shared machine other work only ever adds time, and does so in bursts that
    hit one candidate of a round and not the other."""
    return {op: bool(pairs) and min(k for k, _ in pairs) <= margin * min(m for _, m in pairs)
            for op, pairs in timings.items()}


def machine_key(cpuinfo: str | None = None) -> dict:
    """What a measurement holds for: the CPU model and every flag of ``cpuinfo``, the threads MXNet uses, the BLAS
    ``bert_fc`` runs on, and the measurement's format."""
    model, flags = read_cpuinfo(cpuinfo or CPUINFO)
    blas = blas_path()
    try:  # another build of the BLAS (an upgrade) is another candidate: its size tells them apart
        blas_bytes = os.path.getsize(blas) if blas else None
    except OSError:
        blas_bytes = None
    return {'format': FORMAT, 'cpu': model, 'flags': flags,
            'threads': os.environ.get('OMP_NUM_THREADS') or str(cores()), 'blas': blas, 'blas_bytes': blas_bytes}


def choice_path() -> Path | None:
    """Where the decision is cached: next to the loaded library; ``None`` without it."""
    library = loaded_library()
    return library.with_name(CHOICE_FILE) if library else None


def _read_cache(path: Path, key: dict) -> dict | None:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none yet, or damaged: measure again
    if not isinstance(cached, dict) or cached.get('machine') != key or set(cached.get('kernels', {})) != set(
            OPERATORS):
        return None
    return cached


def _write_cache(path: Path, record: dict) -> None:
    try:
        write_atomic(path, json.dumps(record, indent=2) + '\n')
    except OSError as err:  # a read-only cache: the next process measures again
        log.warning('bert_tutorial kernels: could not cache the choice in %s (%s)', path, err)


# ------------------------------------------------------------------------------------------------ measurement

def _candidates() -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """For each operator, ``(kernel, other)``: callables running one forward + backward (or one update) at BERT-like
    sizes on the kernel and on the operator that runs without it, each waiting for its result."""
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon
    from mxnet.gluon import HybridBlock, nn

    from .kernel_ops import KernelDense, KernelGELU, KernelLayerNorm, _AttentionOnKernels, _dense_like
    from .layer_norm import MatmulLayerNorm
    from .steps import adam_step_kernel, adam_step_mxnet, sum_sq_norm

    rng = np.random.RandomState(0)

    def array(*shape, grad=True):
        x = mx.nd.array(rng.normal(size=shape).astype(np.float32))
        if grad:
            x.attach_grad()
        return x

    def fwd_bwd(block, *inputs):
        block.hybridize(static_alloc=True)

        def run():
            with autograd.record():
                out = block(*inputs)
            out.backward()
            mx.nd.waitall()
        return run

    class Softmax(HybridBlock):  # the attention cell's softmax call, through the same proxy as the cell
        def __init__(self, kernel):
            super().__init__()
            self._kernel = kernel

        def hybrid_forward(self, F, score, length):
            return _AttentionOnKernels(F, softmax=self._kernel).softmax(score, length=length, use_length=True,
                                                                        axis=-1)

    class Products(HybridBlock):  # the cell's two interleaved products
        def __init__(self, kernel):
            super().__init__()
            self._kernel = kernel

        def hybrid_forward(self, F, qkv):
            contrib = _AttentionOnKernels(F, softmax=False, products=self._kernel).contrib
            return contrib.interleaved_matmul_selfatt_valatt(
                qkv, contrib.interleaved_matmul_selfatt_qk(qkv, heads=HEADS), heads=HEADS)

    tokens = (BATCH, TOKENS)
    found = {}
    norm = MatmulLayerNorm(epsilon=1e-12, in_channels=UNITS)
    norm.initialize()
    kernel_norm = KernelLayerNorm(epsilon=1e-12, in_channels=UNITS, prefix=norm.prefix, params=norm.params)
    x = array(*tokens, UNITS)
    found['layer_norm'] = fwd_bwd(kernel_norm, x), fwd_bwd(norm, x)
    score = array(BATCH * HEADS, TOKENS, TOKENS)
    length = mx.nd.array(rng.randint(1, TOKENS + 1, size=(BATCH * HEADS, TOKENS)), dtype='int32')
    found['softmax'] = fwd_bwd(Softmax(True), score, length), fwd_bwd(Softmax(False), score, length)
    hidden = array(*tokens, HIDDEN)
    found['gelu'] = fwd_bwd(KernelGELU(), hidden), fwd_bwd(nn.GELU(), hidden)
    qkv = array(TOKENS, BATCH, 3 * UNITS)
    found['attention'] = fwd_bwd(Products(True), qkv), fwd_bwd(Products(False), qkv)
    if dense_available():  # BERT's feed-forward pair: units -> hidden -> units
        ffn = nn.HybridSequential()
        ffn.add(nn.Dense(HIDDEN, flatten=False, in_units=UNITS), nn.Dense(UNITS, flatten=False, in_units=HIDDEN))
        ffn.initialize()
        kernel_ffn = nn.HybridSequential()
        kernel_ffn.add(*(_dense_like(layer, KernelDense) for layer in ffn))
        found['dense'] = fwd_bwd(kernel_ffn, x), fwd_bwd(ffn, x)

    # The optimizer: the weights of two BERT layers of these widths (their sizes and count decide both paths' time).
    shapes = [(UNITS, UNITS)] * 4 + [(HIDDEN, UNITS), (UNITS, HIDDEN), (HIDDEN,)] + [(UNITS,)] * 9
    weights = [array(*s, grad=False) for s in shapes * 2]
    grads, states = [mx.nd.zeros_like(w) for w in weights], [(mx.nd.zeros_like(w), mx.nd.zeros_like(w)) for w in
                                                             weights]
    hyper = dict(beta1=0.9, beta2=0.999, epsilon=1e-6, rescale_grad=1.0, clip_gradient=-1.0)
    lrs, wds = [1e-5] * len(weights), [0.01] * len(weights)

    def adam_kernel():
        adam_step_kernel(weights, grads, states, lrs, wds, **hyper)
        mx.nd.waitall()

    def adam_mxnet():
        for w, g, s, lr, wd in zip(weights, grads, states, lrs, wds):
            adam_step_mxnet(w, g, s, lr, wd, **hyper)
        mx.nd.waitall()
    found['adam'] = adam_kernel, adam_mxnet

    params = []
    for i, w in enumerate(weights):
        p = gluon.Parameter(f'choice{i}', shape=w.shape)
        p.initialize(init=mx.init.Zero(), ctx=mx.cpu())
        params.append(p)
    from gluonnlp.utils import grad_global_norm

    found['grad_norm'] = (lambda: sum_sq_norm([p.grad() for p in params]).wait_to_read(),
                          lambda: grad_global_norm(params).wait_to_read())
    return found


def measure(rounds: int = ROUNDS, budget: float = BUDGET) -> dict[str, list[tuple[float, float]]]:
    """``{operator: [(kernel seconds, other seconds), ...]}``, one pair a round, the two candidates of an operator
    interleaved (which goes first alternates), after one warm-up call each: at least ``rounds`` rounds, and more
    while the operator's rounds have taken less than ``budget`` seconds (up to ``MAX_ROUNDS``): on a busy machine,
    the more short rounds, the likelier some run undisturbed. Needs the loaded kernels."""
    candidates = _candidates()
    for pair in candidates.values():
        for run in pair:
            run()
    timings: dict[str, list[tuple[float, float]]] = {}
    for op, (kernel, other) in candidates.items():
        pairs = timings[op] = []
        started = time.perf_counter()
        while len(pairs) < rounds or (time.perf_counter() - started < budget and len(pairs) < MAX_ROUNDS):
            seconds = {}
            for name, run in (('kernel', kernel), ('other', other))[::1 if len(pairs) % 2 == 0 else -1]:
                start = time.perf_counter()
                run()
                seconds[name] = time.perf_counter() - start
            pairs.append((seconds['kernel'], seconds['other']))
    return timings


@contextlib.contextmanager
def one_core_busy() -> Iterator[bool]:
    """Within the ``with``, another process spins on one core (as other work on a shared machine does); yields
    whether it does (not on a machine of one core, where it would take all of it)."""
    if cores() < 2:
        yield False
        return
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.05)  # running before the first round
        yield True
    finally:
        spinner.kill()
        spinner.wait()


def _measured_choice() -> dict:
    """This machine's decision without the override: from the cache when it holds for this machine, else measured
    now and cached."""
    path = choice_path()
    if path is None:
        return _measure_and_cache(None, machine_key())
    # One measurement at a time (workers starting together): the others wait, then read it, and all run the same.
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(directory_lock(path.parent))
        except OSError:  # a read-only cache: measure without the lock (and the cache write says it failed)
            pass
        key = machine_key()
        cached = _read_cache(path, key)
        if cached is not None:
            return dict(cached, decided_by=f"measured on this machine on {cached.get('measured')}", cache=str(path))
        return _measure_and_cache(path, key)


def _measure_and_cache(path: Path | None, key: dict) -> dict:
    log.info('bert_tutorial kernels: timing each C++ kernel against the MXNet operator it replaces on this CPU (%s; '
             'a few seconds, once per machine): a kernel runs only where it is at least %d%% faster', key['cpu'],
             round(100 * (1 - MARGIN)))
    started = time.perf_counter()
    timings = measure()
    with one_core_busy() as busy:
        loaded = measure() if busy else timings
    kernels = dict.fromkeys(OPERATORS, False)
    quiet_wins, busy_wins = decide(timings), decide(loaded)
    kernels.update({op: quiet_wins[op] and busy_wins.get(op, False) for op in quiet_wins})

    def best_ms(found):  # the best of the rounds, as decide() compares them
        return {op: {'kernel': round(1000 * min(k for k, _ in pairs), 3),
                     'mxnet': round(1000 * min(m for _, m in pairs), 3)} for op, pairs in found.items()}
    record = {'kernels': kernels, 'machine': key, 'measured': datetime.date.today().isoformat(),
              'seconds': round(time.perf_counter() - started, 2), 'timings_ms': best_ms(timings),
              'timings_ms_one_core_busy': best_ms(loaded) if busy else None}
    if path:
        _write_cache(path, record)
    return dict(record, decided_by='measured now', cache=str(path) if path else None)


def choice_record() -> dict:
    """What this process runs and why, for ``metrics.json`` and the benchmarks: ``{'kernels': {operator: bool},
    'decided_by': ..., 'override': ..., 'timings_ms': ..., 'machine': ..., 'blas': ...}`` (the timings and machine
    of the measurement, when there was one). Measures on first use (see the module's docstring)."""
    global _measured
    override = os.environ.get(CHOICE_SWITCH, '')
    forced = parse_override(override)
    if not load_kernels():
        return {'kernels': dict.fromkeys(OPERATORS, False), 'decided_by': 'no C++ kernels', 'override': override}
    if set(forced) == set(OPERATORS):
        base = {'kernels': dict(forced), 'decided_by': f'{CHOICE_SWITCH}={override}'}
    else:
        if _measured is None:
            _measured = _measured_choice()
        base = dict(_measured, kernels=dict(_measured['kernels'], **forced))
        if forced:
            base['decided_by'] += f', then {CHOICE_SWITCH}={override}'
    if base['kernels']['dense'] and not dense_available():
        base['kernels']['dense'] = False  # forced on, but there is no BLAS here (dense_available logged why)
    return dict(base, override=override, blas=dense_blas())


@contextlib.contextmanager
def override(value: str) -> Iterator[None]:
    """Within the ``with``, ``$BERT_TUTORIAL_KERNEL_CHOICE`` is ``value`` (checked first): what a benchmark uses to
    build a variant on a given set of kernels (``'all'``: 0.4's default) next to the machine's choice."""
    parse_override(value)
    old = os.environ.get(CHOICE_SWITCH)
    os.environ[CHOICE_SWITCH] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CHOICE_SWITCH, None)
        else:
            os.environ[CHOICE_SWITCH] = old


def kernel_choice() -> dict[str, bool]:
    """``{operator: whether its kernel runs here}`` for ``OPERATORS``: all ``False`` without the C++ kernels."""
    return choice_record()['kernels']


def chosen(op: str) -> bool:
    """Whether the kernel of ``op`` (one of ``OPERATORS``) runs on this machine."""
    if op not in OPERATORS:
        raise ValueError(f'op must be one of {", ".join(OPERATORS)}, got {op!r}')
    return kernel_choice()[op]


def describe(record: Mapping) -> str:
    """One line: which kernels run, which operators are MXNet's, and why."""
    kernels = record['kernels']
    on = [op for op in OPERATORS if kernels[op]]
    off = [op for op in OPERATORS if not kernels[op]]
    return (f"C++ kernels for {', '.join(on) or 'nothing'}; MXNet's operators for {', '.join(off) or 'nothing'} "
            f"({record['decided_by']})")


def use_chosen_kernels(block, layer_norm: bool = True, dropout: bool = True, ops: bool = True) -> dict:
    """``use_kernels`` with this machine's choice: each operator kernel that the flags allow and the choice picks
    (``layer_norm``: LayerNorm, ``ops``: softmax, GELU, attention products and dense layers), and the dropout kernel
    as ``dropout`` says (never measured). A LayerNorm whose kernel is not used becomes ``MatmulLayerNorm``, as
    without the kernels. Returns ``use_kernels``'s counts with ``'choice'``: ``choice_record()``. Off a CPU it
    changes nothing (``accelerate`` is the public entry point and says what it did)."""
    from .kernel_ops import use_kernels
    from .layer_norm import use_matmul_layer_norm

    on_cpu = all(c.device_type == 'cpu' for p in block.collect_params().values() for c in p.list_ctx())
    if not on_cpu:  # the kernels and MatmulLayerNorm are CPU work-arounds: nothing to build, time or swap
        return dict(use_kernels(block), choice=None)
    record = choice_record()
    kernels = record['kernels']
    counts = use_kernels(block, layer_norm=layer_norm and kernels['layer_norm'], dropout=dropout,
                         softmax=ops and kernels['softmax'], gelu=ops and kernels['gelu'],
                         attention=ops and kernels['attention'], dense=ops and kernels['dense'])
    if layer_norm and not counts['layer_norm']:
        counts['layer_norm'] = use_matmul_layer_norm(block)
    return dict(counts, choice=record)


def prepare_kernels(measure_again: bool = False) -> str:
    """Build and load the C++ kernels and make this machine's choice now (``python -m bert_tutorial download``),
    with ``measure_again`` afresh (the cached choice is dropped: e.g. it was measured while other work ran); one
    line saying what runs, and from where."""
    global _measured
    if measure_again and load_kernels():
        choice_path().unlink(missing_ok=True)
        _measured = None
    record = choice_record()
    library = loaded_library()
    if library is None:
        return "not available here (see the log above): MXNet's operators run"
    return f'{describe(record)}; library and choice in {library.parent}'
