"""Per-operator profile of one default fine-tuning step: MXNet's operators against the package's C++ kernels.

    python benchmarks/profile_step.py [--rounds N] [--batches N] [--json PATH]

The default pipeline (``build_classifier`` on the built-in model, batch 32, max_len 128, clipping) in these variants,
each its own copy of the model, in one process, built as ``benchmarks/pipelines.py`` builds them (as ``finetune``
does: ``build_classifier``, then ``accelerate`` or not, then ``make_trainer``):
- mxnet: what ``finetune --no-fast`` runs: MXNet's operators only (``LayerNorm``, ``Dropout``, softmax, GELU,
  attention products, ``FullyConnected``) and GluonNLP's ``BERTAdam`` with its gradient norm (``multi_sum_sq``);
- matmul: ``MatmulLayerNorm``, the rest MXNet's, ``FusedBERTAdam`` on ``adam_update`` (``finetune``'s default before
  the C++ kernels, 0.2);
- v0.3: ``KernelLayerNorm``, the rest as matmul (``finetune``'s default in 0.3);
- every: ``accelerate(net)`` under ``choice.override('all')``: every C++ kernel (``KernelLayerNorm``,
  ``KernelDropout``, ``KernelSelfAttentionCell`` with its softmax, products and projection, ``KernelGELU``,
  ``KernelDense``, ``bert_adam_update``, ``bert_sum_sq``): 0.4's default;
- default: what ``finetune`` runs now: ``accelerate(net)``, the kernels this machine's choice picks
  (``bert_tutorial.speed.choice``) and the dropout kernel, and its ``FusedBERTAdam``.
``load_kernels`` must succeed for v0.3, every and default.
Rounds interleave the variants (the machine is shared: compare within a round, as ratios). Each round times steps
without the profiler, then profiles the same steps with ``mx.profiler``'s aggregate statistics; the table gives
milliseconds per step by operator (forward and ``_backward_`` separately).

``--processes N`` repeats the whole comparison in N fresh processes and reports the median of each figure, with each
process's ratios. On these VMs one process in three or so runs the optimizer of one variant (whichever it is, MXNet's
``adam_update`` or the kernel) 2-3x slower for its whole life, with no page faults in the guest: a property of
where its arrays landed, which ratios within one process do not cancel.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import gluonnlp as nlp  # noqa: E402
import mxnet as mx  # noqa: E402
from fresh_processes import run_fresh  # noqa: E402
from mxnet import autograd  # noqa: E402
from pipelines import BATCH, MAX_LEN, MXNetVariant, build_pipeline  # noqa: E402

from bert_tutorial.devices import measured  # noqa: E402
from bert_tutorial.recipes.hub import get_pretrained_bert  # noqa: E402
from bert_tutorial.recipes.sentiment_data import load_movie_reviews, sentiment_loader, subset  # noqa: E402
from bert_tutorial.speed import FusedBERTAdam, choice, load_kernels  # noqa: E402

VARIANTS = ('mxnet', 'matmul', 'v0.3', 'every', 'default')
PIPELINE = {'every': 'every-kernel'}  # pipelines.py's name of a variant, where it differs


class Step(MXNetVariant):
    """One variant's classifier and trainer, stepped as the speed benchmark steps the default pipeline."""

    def __init__(self, name: str, ctx: mx.Context):
        bert, self.vocab = get_pretrained_bert(ctx=ctx, use_pooler=False)
        net, trainer, acceleration = build_pipeline(PIPELINE.get(name, name), bert, ctx)
        if name == 'mxnet':  # finetune --no-fast: GluonNLP's BERTAdam
            assert type(trainer.optimizer) is nlp.optimizer.BERTAdam
        else:  # the optimizer follows the choice its blocks were swapped under (the variant's override)
            assert type(trainer.optimizer) is FusedBERTAdam
            assert trainer.optimizer.kernels == acceleration.choice['kernels']['adam']
        super().__init__(name, net, trainer, [], tutorial_step=False)

    def __call__(self, batch) -> None:
        self.step(batch)
        mx.nd.waitall()  # the optimizer's update too, not only the loss


def profile(step: Step, batches: list) -> dict[str, float]:
    """Milliseconds per step by operator, from ``mx.profiler``'s aggregate statistics over ``batches``."""
    # a file of our own: MXNet replaces the file it writes the trace to (as root, filename=os.devnull replaced
    # /dev/null with a regular file for the whole machine)
    trace = Path(tempfile.gettempdir()) / f'profile_step.{os.getpid()}.json'
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=str(trace))
    mx.profiler.dumps(reset=True)  # drop what earlier runs left
    mx.profiler.set_state('run')
    for batch in batches:
        step(batch)
    mx.profiler.set_state('stop')
    stats = json.loads(mx.profiler.dumps(reset=True, format='json'))['Time'].get('operator', {})
    trace.unlink(missing_ok=True)
    return {op: s['Total'] / len(batches) for op, s in stats.items()}


def timed(step: Step, batches: list) -> float:
    """Milliseconds per step, without the profiler."""
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return 1000 * (time.perf_counter() - start) / len(batches)


def profile_step(rounds: int = 2, n_batches: int = 2, variants: tuple[str, ...] = VARIANTS) -> dict:
    """``{'step_ms': {variant: [ms per round]}, 'operators': {variant: {op: ms per step}}}`` (operators averaged
    over rounds), the variants interleaved in every round."""
    if {'v0.3', 'every', 'default'} & set(variants) and not load_kernels():
        raise RuntimeError('the C++ kernels did not build or load: profile the mxnet and matmul variants only')
    ctx = mx.cpu()
    mx.random.seed(0)
    steps = [Step(name, ctx) for name in variants]
    tokenizer = nlp.data.BERTTokenizer(steps[0].vocab, lower=True)
    examples = subset(load_movie_reviews('train'), BATCH * 8, seed=0)
    loader = sentiment_loader(examples, tokenizer, steps[0].vocab, MAX_LEN, BATCH, shuffle=True, bucket=True)
    # the batches with the most tokens (the movie reviews are short: the longest batches are leftovers of a few
    # examples, which would make the step look like an optimizer step)
    batches = sorted(([x.as_in_context(ctx) for x in b] for b in loader),
                     key=lambda b: -b[0].shape[0] * b[0].shape[1])[:n_batches]
    for step in steps:  # warm-up: graphs, memory, oneDNN primitives
        for batch in batches:
            step(batch)
    step_ms = {s.name: [] for s in steps}
    operators: dict[str, dict[str, float]] = {s.name: {} for s in steps}
    for _ in range(rounds):
        for step in steps:
            step_ms[step.name].append(timed(step, batches))
        for step in steps:
            for op, ms in profile(step, batches).items():
                operators[step.name][op] = operators[step.name].get(op, 0.0) + ms / rounds
    shapes = [list(b[0].shape) for b in batches]
    return {'step_ms': step_ms, 'operators': operators, 'batch_shapes': shapes, 'rounds': rounds}


def op_times(shape: tuple[int, int] = (1024, 384), rounds: int = 5, repeat: int = 10) -> dict[str, list[float]]:
    """Forward + backward milliseconds of LayerNorm and Dropout(0.1) on one ``shape`` activation, per round (the
    operators interleaved in every round): MXNet's, ``MatmulLayerNorm`` and the C++ kernels."""
    from mxnet.gluon import nn

    from bert_tutorial.speed import KernelDropout, KernelLayerNorm, MatmulLayerNorm

    if not load_kernels():
        raise RuntimeError('the C++ kernels did not build or load')
    units = shape[-1]
    ref = nn.LayerNorm(epsilon=1e-12, in_channels=units)
    ref.initialize()
    blocks = {'LayerNorm (MXNet)': ref,
              'MatmulLayerNorm': MatmulLayerNorm(epsilon=1e-12, in_channels=units, prefix=ref.prefix,
                                                 params=ref.params),
              'KernelLayerNorm': KernelLayerNorm(epsilon=1e-12, in_channels=units, prefix=ref.prefix,
                                                 params=ref.params),
              'Dropout (MXNet)': nn.Dropout(0.1), 'KernelDropout': KernelDropout(0.1)}
    for block in blocks.values():
        block.hybridize(static_alloc=True)
    x, dy = mx.nd.random.normal(shape=shape), mx.nd.random.normal(shape=shape)
    x.attach_grad()

    def run(block) -> None:
        with autograd.record():
            y = block(x)
        y.backward(dy)

    for block in blocks.values():  # warm-up
        run(block)
    mx.nd.waitall()
    out: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            start = time.perf_counter()
            for _ in range(repeat):
                run(block)
            mx.nd.waitall()
            out[name].append(1000 * (time.perf_counter() - start) / repeat)
    return out


def report_ops(times: dict[str, list[float]]) -> str:
    """Median ms per operator and, per round, MXNet's time over ours."""
    import statistics

    lines = [f'{name:20s} {statistics.median(ms):7.2f} ms (rounds: {", ".join(f"{m:.2f}" for m in ms)})'
             for name, ms in times.items()]
    for ours, theirs in (('KernelLayerNorm', 'LayerNorm (MXNet)'), ('KernelLayerNorm', 'MatmulLayerNorm'),
                         ('KernelDropout', 'Dropout (MXNet)')):
        ratios = [t / o for t, o in zip(times[theirs], times[ours])]
        lines.append(f'{theirs} / {ours}: median {statistics.median(ratios):.1f}x '
                     f'(rounds: {", ".join(f"{r:.1f}" for r in ratios)})')
    return '\n'.join(lines)


# the dense layers' products: MXNet's operator, or the package's bert_fc in its place
FULLY_CONNECTED = ('FullyConnected', '_backward_FullyConnected', 'bert_fc', '_backward_bert_fc')


def outside_fully_connected(result: dict) -> dict[str, float]:
    """Milliseconds per step spent in operators other than the dense layers' products (``FullyConnected``, or
    ``bert_fc`` in its place; forward and backward), by variant: what the speed issue's small kernels are for."""
    return {v: sum(ms for op, ms in ops.items() if op not in FULLY_CONNECTED)
            for v, ops in result['operators'].items()}


def in_processes(n: int, rounds: int, n_batches: int, variants: tuple[str, ...]) -> dict:
    """``profile_step`` in ``n`` fresh processes, one after another: the median over processes of each operator's
    time, every process's step times, and ``processes``: each process's time outside ``FullyConnected``."""
    args = ['--rounds', str(rounds), '--batches', str(n_batches), '--variants', ','.join(variants)]
    runs = run_fresh(__file__, args, '--json', n, echo=False)
    operators = {v: {op: statistics.median(r['operators'][v].get(op, 0.0) for r in runs)
                     for op in {op for r in runs for op in r['operators'][v]}} for v in variants}
    return {'step_ms': {v: [ms for r in runs for ms in r['step_ms'][v]] for v in variants},
            'operators': operators, 'batch_shapes': runs[0]['batch_shapes'], 'rounds': rounds,
            'processes': [r['outside_fully_connected_ms'] for r in runs]}


def report(result: dict, top: int = 25) -> str:
    """The table: ms per step of the operators that cost most in any variant, then the step times and ratios."""
    ops = result['operators']
    names = list(ops)
    every = {op for variant in ops.values() for op in variant}
    ranked = sorted(every, key=lambda op: -max(ops[v].get(op, 0.0) for v in names))[:top]
    lines = [f'{"operator (ms per step)":34s}' + ''.join(f'{v:>10s}' for v in names)]
    for op in ranked:
        lines.append(f'{op[:34]:34s}' + ''.join(f'{ops[v].get(op, 0.0):10.2f}' for v in names))
    lines.append(f'{"all operators":34s}' + ''.join(f'{sum(ops[v].values()):10.1f}' for v in names))
    outside = outside_fully_connected(result)
    lines.append(f'{"outside FullyConnected":34s}' + ''.join(f'{outside[v]:10.1f}' for v in names))
    steps = result['step_ms']
    lines.append(f'{"step, unprofiled (per round)":34s}' + ''.join(
        f' {"/".join(f"{ms:.0f}" for ms in steps[v]):>14s}' for v in names))
    base = names[0]
    for v in names[1:]:
        ratios = [b / o for b, o in zip(steps[base], steps[v])]
        lines.append(f'{base} / {v} step time, per round: ' + ', '.join(f'{r:.2f}' for r in ratios)
                     + f'; time outside FullyConnected: {outside[base] / outside[v]:.2f}x less')
        if result.get('processes'):
            lines.append('    the same, process by process: ' + ', '.join(
                f'{p[base] / p[v]:.2f}x' for p in result['processes']))
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--batches', type=int, default=2, help='batches per timed/profiled run')
    parser.add_argument('--variants', default=','.join(VARIANTS), help=f'comma-separated, of {", ".join(VARIANTS)}')
    parser.add_argument('--json', default=None, help='also write the figures here')
    parser.add_argument('--processes', type=int, default=1,
                        help='repeat in N fresh processes and report the medians (see above)')
    parser.add_argument('--ops', action='store_true',
                        help='only the operators on one (1024, 384) activation, forward + backward')
    args = parser.parse_args()
    if args.ops:
        print(report_ops(op_times()))
        return
    variants = tuple(v for v in args.variants.split(',') if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        raise ValueError(f'--variants: {", ".join(sorted(unknown)) or "none given"}; choose from {VARIANTS}')
    warnings.filterwarnings('ignore')
    if args.processes < 1:
        raise ValueError(f'--processes must be >= 1, got {args.processes}')
    if args.processes > 1:
        result = in_processes(args.processes, args.rounds, args.batches, variants)
    else:
        result = profile_step(args.rounds, args.batches, variants)
    print(report(result))
    record = choice.choice_record()
    print(f'default: {choice.describe(record)}')
    if args.json:
        result.update(outside_fully_connected_ms=outside_fully_connected(result),
                      measured=measured(), kernel_choice=record)
        Path(args.json).write_text(json.dumps(result, indent=1) + '\n')


if __name__ == '__main__':
    main()
