"""Fine-tuning speed: the package's default pipeline against the tutorial's, in one process, as ratios.

    python benchmarks/bench_finetune.py [--quick]

Both variants fine-tune ``BERTClassifier`` on the built-in default model with the same examples of the built-in
movie-review corpus (batch 32, max_len 128), after warm-up, in interleaved rounds (the machine is shared: only
ratios within one run mean anything):
- tutorial: shuffled loader padding to the longest in the batch, imperative, dense word-embedding gradient;
- default (what ``finetune`` does): length buckets, ``hybridize(static_alloc=True)``, frozen word embedding.
When torch and transformers are importable, Hugging Face's ``BertForSequenceClassification`` on the same checkpoint
and the default pipeline's batches is timed too (otherwise skipped, with a message).
Figures go to ``benchmarks/results/finetune.json``.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from bert_tutorial import BERTClassifier, get_pretrained_bert
from bert_tutorial.data import load_movie_reviews, sentiment_loader, subset
from bert_tutorial.pretrained import describe_bert
from bert_tutorial.training import make_trainer

RESULTS = Path(__file__).parent / 'results' / 'finetune.json'


def matmul_peak_gflops(n: int = 2048, repeat: int = 3) -> float:
    a = mx.nd.random.uniform(shape=(n, n))
    mx.nd.dot(a, a).wait_to_read()
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        mx.nd.dot(a, a).wait_to_read()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def train_flops(config: dict, batch) -> float:
    """Forward + backward FLOPs of one step: 3x the forward's dense and attention matmuls."""
    ids = batch[0]
    b, t = ids.shape
    u, f, layers = config['hidden_size'], config['intermediate_size'], config['num_hidden_layers']
    dense = 2 * b * t * layers * (4 * u * u + 2 * u * f)
    attention = 2 * b * layers * 2 * t * t * u
    return 3.0 * (dense + attention)


def build(ctx, freeze: bool, hybridize: bool):
    bert, vocab = get_pretrained_bert(ctx=ctx)
    if freeze:
        bert.word_embed[0].collect_params().setattr('grad_req', 'null')
    net = BERTClassifier(bert, 2, dropout=0.1, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.02), ctx=ctx)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net, vocab, make_trainer(net, 5e-5)


def step(net, trainer, batch, ctx, loss_fn) -> int:
    ids, valid_len, segments, label = (x.as_in_context(ctx) for x in batch)
    with autograd.record():
        loss = loss_fn(net(ids, segments, valid_len), label).mean()
    loss.backward()
    trainer.allreduce_grads()
    nlp.utils.clip_grad_global_norm([p for p in net.collect_params().values() if p.grad_req != 'null'], 1.0)
    trainer.update(1)
    loss.wait_to_read()
    return ids.shape[0]


def time_variant(net, trainer, batches, ctx, loss_fn) -> tuple[float, float]:
    start = time.perf_counter()
    samples = sum(step(net, trainer, b, ctx, loss_fn) for b in batches)
    return samples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='few steps (for CI)')
    parser.add_argument('--examples', type=int, default=None)
    parser.add_argument('--rounds', type=int, default=None)
    args = parser.parse_args()
    warnings.filterwarnings('ignore')
    n_examples = args.examples or (96 if args.quick else 640)
    rounds = args.rounds or (1 if args.quick else 3)
    ctx = mx.cpu()
    np.random.seed(0)
    examples = subset(load_movie_reviews('train'), n_examples, seed=0)
    loss_fn = gluon.loss.SoftmaxCELoss()
    tut_net, vocab, tut_trainer = build(ctx, freeze=False, hybridize=False)
    def_net, _, def_trainer = build(ctx, freeze=True, hybridize=True)
    tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
    tut_batches = list(sentiment_loader(examples, tokenizer, vocab, 128, 32, shuffle=True, bucket=False))
    def_batches = list(sentiment_loader(examples, tokenizer, vocab, 128, 32, shuffle=True, bucket=True))
    for net, trainer, batches in ((tut_net, tut_trainer, tut_batches), (def_net, def_trainer, def_batches)):
        step(net, trainer, batches[0], ctx, loss_fn)  # warm-up (graph building, allocation)
    totals = {'tutorial': [0.0, 0.0], 'default': [0.0, 0.0]}
    for r in range(rounds):
        for name, net, trainer, batches in (('tutorial', tut_net, tut_trainer, tut_batches),
                                            ('default', def_net, def_trainer, def_batches)):
            samples, seconds = time_variant(net, trainer, batches, ctx, loss_fn)
            totals[name][0] += samples
            totals[name][1] += seconds
            print(f'round {r}: {name:8s} {samples / seconds:6.1f} samples/s')
    sps = {k: v[0] / v[1] for k, v in totals.items()}
    config = describe_bert(def_net.bert)
    gflops = rounds * sum(train_flops(config, b) for b in def_batches) / totals['default'][1] / 1e9
    peak = matmul_peak_gflops()
    result = {
        'samples_per_second': sps['default'], 'tutorial_samples_per_second': sps['tutorial'],
        'speedup_vs_tutorial': sps['default'] / sps['tutorial'], 'speedup_vs_pytorch': None,
        'gflops': gflops, 'matmul_peak_gflops': peak, 'examples': n_examples, 'rounds': rounds,
        'padding_fraction': {
            name: 1 - sum(float(b[1].sum().asscalar()) for b in bs) / sum(b[0].size for b in bs)
            for name, bs in (('tutorial', tut_batches), ('default', def_batches))},
    }
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        print('torch and transformers are importable, but the PyTorch comparison is not implemented yet')
    except ImportError:
        print('PyTorch comparison skipped: torch and transformers are not importable (they are not dependencies)')
    print(f"default pipeline: {sps['default']:.1f} samples/s, {result['speedup_vs_tutorial']:.2f}x the tutorial's "
          f"({sps['tutorial']:.1f}); {gflops:.0f} GFLOP/s achieved vs {peak:.0f} GFLOP/s float32 matmul peak "
          f"({gflops / peak:.0%})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    main()
