"""Fine-tuning speed: the package's default pipeline against the tutorial's and Hugging Face + PyTorch's, as ratios.

    python benchmarks/bench_finetune.py [--quick] [--results PATH]

Every variant fine-tunes a classifier on the built-in default model (all-MiniLM-L6-v2) with the same examples of
the built-in movie-review corpus (batch 32, max_len 128), in one process, after warm-up, in interleaved rounds (the
machine is shared: only ratios within one run mean anything). A step is forward, backward, gradient clipping at
global norm 1 and the optimizer update.
- tutorial: shuffled batches padded to their longest, imperative, MXNet's LayerNorm, dense word-embedding gradient,
  and the tutorial's ``train_loop`` step: GluonNLP's ``BERTAdam`` with weight decay on every parameter, backward on
  the per-example loss vector, clipping that rewrites every gradient (GluonNLP's ``clip_grad_global_norm``);
- default (what ``python -m bert_tutorial finetune`` trains on a CPU): length buckets, ``hybridize(static_alloc=True)``,
  the word embedding trained (``finetune``'s default since 0.3), and the speed plug-in's one switch as ``finetune``
  throws it: ``build_classifier(...)``, ``accelerate(net)`` (the dropout kernel and each operator kernel of the
  package, dense layers, LayerNorm, attention softmax and products, GELU, where this machine's choice picks it:
  ``bert_tutorial.speed.choice``, printed at the start), ``make_trainer(..., acceleration.optimizer)``
  (``FusedBERTAdam``: the optimizer update and gradient norm on the kernels the choice picks), clipping through the
  optimizer's gradient rescaling;
- every-kernel (0.4's default; not with ``--quick``): the same under ``choice.override('all')``: every kernel,
  whatever the choice;
- mxnet-ops (not with ``--quick``): ``accelerate(net, ops=False)`` (what the deprecated ``finetune --mxnet-ops``
  runs): MXNet's dense layers, softmax, attention products and GELU, LayerNorm, dropout and optimizer as the default;
- mxnet (not with ``--quick``): what ``finetune --no-fast`` runs: the default pipeline on MXNet's operators and
  GluonNLP's ``BERTAdam`` with its gradient norm (no C++ kernel, nothing compiled), as on a machine without the
  kernels' speed;
- pytorch, when torch and transformers are importable (they are not dependencies): Hugging Face's
  ``BertForSequenceClassification`` on the same checkpoint, the default pipeline's batches, the same trainable
  parameters (the word embedding too), AdamW with the same decay groups, and as many threads as MXNet uses.
The pipelines are built in ``benchmarks/pipelines.py`` (``profile_step.py`` profiles the same). The achieved GFLOP/s
of the default pipeline counts the dense and attention matrix products of forward and backward on the padded
batches. Test accuracies of full runs are read from ``runs/finetune/metrics.json`` (default) and
``runs/finetune-tutorial/metrics.json`` (the tutorial's pipeline) when they exist; docs/speed.md says how to make them.
Figures go to ``benchmarks/results/finetune.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

# MXNet and PyTorch each bring an OpenMP thread pool; with the default (active) waiting, the idle pool's spinning
# threads take the cores from the busy one. Set before either runtime starts.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import gluonnlp as nlp  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import gluon  # noqa: E402
from pipelines import BATCH, CLIP, LR, MAX_LEN, MXNetVariant, build_pipeline  # noqa: E402

import bert_tutorial  # noqa: E402
from bert_tutorial.devices import measured  # noqa: E402
from bert_tutorial.recipes.finetuning import FinetuneConfig  # noqa: E402
from bert_tutorial.recipes.hub import builtin_checkpoint_dir, get_pretrained_bert  # noqa: E402
from bert_tutorial.recipes.sentiment_data import load_movie_reviews, sentiment_loader, subset  # noqa: E402
from bert_tutorial.speed import choice  # noqa: E402
from bert_tutorial.tutorial.model import BERTClassifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results' / 'finetune.json'
OTHER_VARIANTS = ('every-kernel', 'mxnet-ops', 'mxnet')  # timed next to the default, except with --quick


def threads() -> int:
    """The thread count MXNet's OpenMP kernels use (``OMP_NUM_THREADS``, else every core)."""
    return int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count() or 1)


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """Best float32 ``n x n`` matrix product rate here: oneDNN's (``FullyConnected``), MXNet's BLAS (``dot``),
    numpy's OpenBLAS, or the OpenBLAS ``bert_fc`` runs on (scipy-openblas32's) where it runs."""
    from bert_tutorial.speed.kernels import dense_available

    a = mx.nd.random.uniform(shape=(n, n))
    x = a.asnumpy()
    products = [lambda: mx.nd.FullyConnected(a, a, no_bias=True, num_hidden=n).wait_to_read(),
                lambda: mx.nd.dot(a, a).wait_to_read(), lambda: x @ x]
    if dense_available():
        zeros = mx.nd.zeros((n,))
        products.append(lambda: mx.nd.bert_fc(a, a, zeros).wait_to_read())
    best = float('inf')
    for product in products:
        product()
        for _ in range(repeat):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def train_flops(config: dict, batch) -> float:
    """Forward + backward FLOPs of one step: 3x the forward's dense and attention matrix products."""
    b, t = batch[0].shape
    u, f, layers = config['units'], config['hidden_size'], config['num_layers']
    dense = 2 * b * t * layers * (4 * u * u + 2 * u * f)
    attention = 2 * b * layers * 2 * t * t * u
    return 3.0 * (dense + attention)


class PyTorchVariant:
    """Hugging Face's BertForSequenceClassification on the same checkpoint, batches and trainable parameters."""
    name = 'pytorch'

    def __init__(self, batches, n_threads: int):
        import torch
        from transformers import BertForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(n_threads)
        torch.manual_seed(0)
        self.torch = torch
        self.model = BertForSequenceClassification.from_pretrained(str(builtin_checkpoint_dir()), num_labels=2)
        # The same trainable parameters as the default pipeline.
        self.model.bert.embeddings.word_embeddings.weight.requires_grad_(not FinetuneConfig().freeze_word_embed)
        self.model.train()
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        no_decay = [p for n, p in named if 'LayerNorm' in n or n.endswith('bias')]
        decay = [p for n, p in named if not ('LayerNorm' in n or n.endswith('bias'))]
        self.params = decay + no_decay
        self.optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.01},
                                            {'params': no_decay, 'weight_decay': 0.0}], lr=LR, eps=1e-6)
        self.batches = [self.convert(b) for b in batches]

    def convert(self, batch):
        ids, valid_len, segments, label = (x.asnumpy() for x in batch)
        t = self.torch
        mask = (np.arange(ids.shape[1])[None, :] < valid_len[:, None]).astype('int64')
        return (t.from_numpy(ids.astype('int64')), t.from_numpy(mask), t.from_numpy(segments.astype('int64')),
                t.from_numpy(label.astype('int64')))

    def step(self, batch) -> int:
        ids, mask, segments, label = batch
        loss = self.model(input_ids=ids, attention_mask=mask, token_type_ids=segments, labels=label).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return ids.shape[0]


def pytorch_available() -> str | None:
    """``None`` when torch and transformers import, else why not."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        return f'{err.name} is not importable (pip install torch==2.13.0 transformers; not a dependency)'
    return None


def mxnet_variants(examples, ctx, others: bool = False) -> list[MXNetVariant]:
    """The tutorial's pipeline and the default, and with ``others`` the every-kernel, mxnet-ops and mxnet variants."""
    out = []
    for name in ('tutorial', 'default') + (OTHER_VARIANTS if others else ()):
        bert, vocab = get_pretrained_bert(ctx=ctx, use_pooler=False)  # both pool by the mean
        tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
        if name == 'tutorial':
            net = BERTClassifier(bert, 2, dropout=0.1, pooling='mean')
            net.classifier.initialize(mx.init.Normal(0.02), ctx=ctx)
        batches = [[x.as_in_context(ctx) for x in b] for b in sentiment_loader(
            examples, tokenizer, vocab, MAX_LEN, BATCH, shuffle=True, bucket=name != 'tutorial')]
        if name == 'tutorial':  # its utils.train_loop: GluonNLP's BERTAdam, weight decay on every parameter
            trainer = gluon.Trainer(net.collect_params(), 'bertadam', {'learning_rate': LR, 'wd': 0.01,
                                                                        'epsilon': 1e-6})
        else:  # as finetune builds it: build_classifier, accelerate (or not: mxnet), make_trainer
            net, trainer, _ = build_pipeline(name, bert, ctx)
        out.append(MXNetVariant(name, net, trainer, batches, tutorial_step=name == 'tutorial'))
    return out


def value_check_ms(net, batches, repeat: int = 3) -> float:
    """Milliseconds a batch that ``BERTClassifier``'s value checks (ids, segments, lengths: a copy to the host each)
    cost where they run: outside ``autograd.record()``. A training step checks shapes only."""
    from bert_tutorial.checks import check_segments, check_token_ids, check_valid_len

    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        for ids, valid_len, segments, _ in batches:
            check_token_ids(ids, net.vocab_size, 'inputs')
            check_segments(segments, ids.shape, 'segment_types')
            check_valid_len(valid_len, ids.shape[0], ids.shape[1], 'seq_len')
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(batches)


def full_run_accuracies(root: Path = ROOT) -> dict:
    """Test accuracies of finished full fine-tuning runs under ``root``, by pipeline, where their metrics exist."""
    found = {}
    for name, run in (('default', 'runs/finetune'), ('tutorial', 'runs/finetune-tutorial')):
        path = root / run / 'metrics.json'
        if path.is_file():
            metrics = json.loads(path.read_text())
            found[name] = {'test_accuracy': metrics['test_accuracy'], 'epochs': len(metrics['history']),
                           'train_samples_per_second': metrics['train_samples_per_second'], 'run': run}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='few steps (for CI)')
    parser.add_argument('--examples', type=int, default=None, help='training examples timed per round')
    parser.add_argument('--rounds', type=int, default=None)
    parser.add_argument('--no-pytorch', action='store_true', help='skip the PyTorch comparison')
    parser.add_argument('--no-profile', action='store_true',
                        help="skip the per-operator profile of a default step (MXNet's operators against the "
                        "package's kernels; benchmarks/profile_step.py)")
    parser.add_argument('--results', default=str(RESULTS), help='where to write the figures (JSON)')
    parser.add_argument('--processes', type=int, default=1,
                        help='repeat the timing in N fresh processes and report the medians: on these VMs a process '
                        'can run one variant slower for its whole life (see benchmarks/profile_step.py)')
    args = parser.parse_args()
    warnings.filterwarnings('ignore')
    if args.processes < 1:
        parser.error(f'--processes must be >= 1, got {args.processes}')
    result = in_processes(args) if args.processes > 1 else measure(args)
    if not args.no_profile:
        result['profile'] = operator_profile(quick=args.quick)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')


RATIOS = ('speedup_vs_tutorial', 'speedup_vs_pytorch', 'gflops_fraction_of_peak')


def in_processes(args: argparse.Namespace) -> dict:
    """``measure`` in ``args.processes`` fresh processes, one after another: the median of each rate and ratio over
    the processes (the best matmul peak), and ``processes``: every process's ratios."""
    import statistics

    from fresh_processes import run_fresh

    command = ['--no-profile']
    command += ['--quick'] if args.quick else []
    command += ['--no-pytorch'] if args.no_pytorch else []
    command += ['--examples', str(args.examples)] if args.examples else []
    command += ['--rounds', str(args.rounds)] if args.rounds else []
    runs = run_fresh(__file__, command, '--results', args.processes, echo=True)
    result = dict(runs[0])
    for key in ('samples_per_second', 'tutorial_samples_per_second', 'pytorch_samples_per_second', 'gflops',
                'value_check_ms_per_batch', *RATIOS):
        values = [r[key] for r in runs if r.get(key) is not None]
        result[key] = statistics.median(values) if values else None
    result['variant_samples_per_second'] = {
        name: statistics.median(r['variant_samples_per_second'][name] for r in runs)
        for name in runs[0].get('variant_samples_per_second', {})}
    result['matmul_peak_gflops'] = max(r['matmul_peak_gflops'] for r in runs)
    result['processes'] = [{key: r.get(key) for key in RATIOS} for r in runs]
    print(f"over {args.processes} processes (median): default pipeline {result['speedup_vs_tutorial']:.2f}x the "
          f"tutorial's (" + ', '.join(f"{r['speedup_vs_tutorial']:.2f}" for r in runs) + ')')
    if result['speedup_vs_pytorch'] is not None:
        print(f"over {args.processes} processes (median): default pipeline {result['speedup_vs_pytorch']:.2f}x "
              f"Hugging Face + PyTorch (" + ', '.join(f"{r['speedup_vs_pytorch']:.2f}" for r in runs) + ')')
    sps = result['variant_samples_per_second']
    for name in OTHER_VARIANTS:
        if name in sps:
            each = [r['variant_samples_per_second']['default'] / r['variant_samples_per_second'][name] for r in runs]
            print(f"over {args.processes} processes (median): default pipeline {sps['default'] / sps[name]:.2f}x the "
                  f"{name} variant (" + ', '.join(f'{x:.2f}' for x in each) + ')')
    print(f"over {args.processes} processes (median): {result['gflops_fraction_of_peak']:.0%} of the float32 "
          f"matmul peak (" + ', '.join(f"{r['gflops_fraction_of_peak']:.0%}" for r in runs) + ')')
    return result


def measure(args: argparse.Namespace) -> dict:
    """One process's timing of every variant: prints the ratios, returns the figures."""
    n_examples = args.examples or (64 if args.quick else 640)
    rounds = args.rounds or (1 if args.quick else 3)
    ctx = mx.cpu()
    mx.random.seed(0)
    np.random.seed(0)
    examples = subset(load_movie_reviews('train'), n_examples, seed=0)
    kernel_choice = choice.choice_record()  # made (measured, or read from its cache) before anything is timed
    print(f'default pipeline runs {choice.describe(kernel_choice)}')
    variants: list = mxnet_variants(examples, ctx, others=not args.quick)
    default = variants[1]
    skipped = None if not args.no_pytorch else 'skipped with --no-pytorch'
    skipped = skipped or pytorch_available()
    if skipped is None:
        variants.append(PyTorchVariant(default.batches, threads()))
    else:
        print(f'PyTorch comparison skipped: {skipped}')
    for v in variants:  # warm-up: graph building, memory allocation, oneDNN primitive caches
        for batch in v.batches[:3]:
            v.step(batch)
    totals = {v.name: [0, 0.0] for v in variants}
    peak = 0.0
    for r in range(rounds):
        peak = max(peak, matmul_peak_gflops())  # once a round: the best of the run is the quietest
        for v in variants:
            start = time.perf_counter()
            samples = sum(v.step(b) for b in v.batches)
            seconds = time.perf_counter() - start
            totals[v.name][0] += samples
            totals[v.name][1] += seconds
            print(f'round {r}: {v.name:8s} {samples / seconds:6.1f} samples/s')
    sps = {name: s / t for name, (s, t) in totals.items()}
    config = default.net.bert.config
    gflops = rounds * sum(train_flops(config, b) for b in default.batches) / totals['default'][1] / 1e9
    result = {
        'samples_per_second': sps['default'], 'tutorial_samples_per_second': sps['tutorial'],
        'pytorch_samples_per_second': sps.get('pytorch'),
        'speedup_vs_tutorial': sps['default'] / sps['tutorial'],
        'speedup_vs_pytorch': sps['default'] / sps['pytorch'] if 'pytorch' in sps else None,
        'pytorch_skipped': skipped,
        'gflops': gflops, 'matmul_peak_gflops': peak, 'gflops_fraction_of_peak': gflops / peak,
        'examples': n_examples, 'rounds': rounds, 'batch_size': BATCH, 'max_len': MAX_LEN, 'threads': threads(),
        'omp_wait_policy': os.environ['OMP_WAIT_POLICY'],
        'padding_fraction': {
            v.name: 1 - sum(float(b[1].sum().asscalar()) for b in v.batches) / sum(b[0].size for b in v.batches)
            for v in variants[:2]},
        'full_runs': full_run_accuracies(),
        'value_check_ms_per_batch': value_check_ms(default.net, default.batches),
        'bert_tutorial_version': bert_tutorial.__version__,
        'kernel_choice': kernel_choice,
        'variant_samples_per_second': sps,
        'measured': measured(),
    }
    print(f"default pipeline: {sps['default']:.1f} samples/s, {result['speedup_vs_tutorial']:.2f}x the tutorial's "
          f"({sps['tutorial']:.1f})")
    for name in OTHER_VARIANTS:
        if name in sps:
            print(f"default pipeline: {sps['default'] / sps[name]:.2f}x the {name} variant ({sps[name]:.1f})")
    if result['speedup_vs_pytorch'] is not None:
        print(f"default pipeline: {result['speedup_vs_pytorch']:.2f}x Hugging Face + PyTorch "
              f"({sps['pytorch']:.1f} samples/s, {threads()} threads)")
    step_ms = 1000 * totals['default'][1] / (rounds * len(default.batches))
    print(f"input value checks: {result['value_check_ms_per_batch']:.2f} ms a batch where they run (prediction, "
          f"evaluation; {result['value_check_ms_per_batch'] / step_ms:.1%} of a default training step of "
          f"{step_ms:.0f} ms, which checks shapes only)")
    print(f'default pipeline: {gflops:.0f} GFLOP/s achieved vs {peak:.0f} GFLOP/s float32 matmul peak '
          f'({gflops / peak:.0%})')
    runs = result['full_runs']
    if 'default' in runs and 'tutorial' in runs:
        drop = runs['tutorial']['test_accuracy'] - runs['default']['test_accuracy']
        result['accuracy_drop_vs_tutorial'] = drop
        print(f"test accuracy of full runs: default {runs['default']['test_accuracy']:.4f}, tutorial's pipeline "
              f"{runs['tutorial']['test_accuracy']:.4f} ({100 * drop:+.2f} points lost)")
    return result


def operator_profile(quick: bool) -> dict | None:
    """Print and return the per-operator profile of one default step: MXNet's operators ('mxnet') against 0.3's
    default ('v0.3': the LayerNorm kernel), 0.4's ('every': every C++ kernel) and what ``finetune`` runs now
    ('default': the kernels this machine's choice picks), in three
    fresh processes (one with ``quick``); ``None`` without the kernels."""
    from profile_step import in_processes, outside_fully_connected, profile_step, report

    from bert_tutorial.speed import load_kernels
    if not load_kernels():
        print('per-operator profile skipped: the C++ kernels did not build or load')
        return None
    variants = ('mxnet', 'v0.3', 'every', 'default')
    profile = profile_step(1, 1, variants) if quick else in_processes(3, 2, 2, variants)
    print('\nper-operator profile of one training step (ms), MXNet operators against the kernels:')
    print(report(profile, top=12 if quick else 25))
    return dict(profile, outside_fully_connected_ms=outside_fully_connected(profile))


if __name__ == '__main__':
    main()
