"""Prediction speed and accuracy: the package's float32 path against the exported, fused and INT8 graphs.

    python benchmarks/bench_predict.py [--model-dir runs/finetune] [--quick] [--results PATH]

All variants classify the same test sentences of the built-in movie-review corpus with the same fine-tuned
classifier, in one process, after warm-up, in interleaved rounds (the machine is shared: only ratios within one
run mean anything). Every variant goes through ``predict_sentiments`` (tokenizing included, batch 32, max_len from
the model's config):
- float32: ``load_model``'s ``BERTClassifier`` (imperative), sentences in the order given (the package's
  path before length sorting; the baseline);
- float32-sorted: the same, with ``sort_by_length=True`` (batches of similar length: less padding);
- exported: ``export_classifier`` + ``load_model`` (``SymbolBlock``, hybridized), float32, order given;
- fused: the exported graph for CPU (``fuse_classifier``: attention softmax without MXNet's slow length-aware
  kernel, ``softmax_without_length``, then oneDNN/MKLDNN operator fusion), float32, order given;
- int8: the same graph quantized (``quantize_classifier``: dense layers and attention matmuls in oneDNN INT8,
  calibrated on training sentences), order given;
- int8-sorted: the same INT8 graph with ``sort_by_length=True``.
Single-sentence latency (``predict_sentiment``) is measured for float32, exported, fused and int8.
``int8_speedup`` is int8 over float32 (same batching: the model alone); the bar is >= 2x with an accuracy drop
(float32 minus int8 accuracy, a fraction) of at most 0.01. Figures go to ``--results``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np

import bert_tutorial  # noqa: E402
from bert_tutorial.devices import measured
from bert_tutorial.recipes.export import (
    export_classifier,
    fuse_classifier,
    int8_layers,
    quantize_classifier,
)
from bert_tutorial.recipes.finetuning import FinetuneConfig, finetune
from bert_tutorial.recipes.hub import load_model
from bert_tutorial.recipes.sentiment_data import load_movie_reviews, subset
from bert_tutorial.tutorial.data import LABELS, SentimentTransform
from bert_tutorial.tutorial.predict import predict_sentiment, predict_sentiments, sentence_batches

RESULTS = Path(__file__).parent / 'results' / 'predict.json'
BATCH_SIZE = 32


def tiny_model(out: Path) -> Path:
    """A quickly fine-tuned classifier (for --quick when there is no model): the finetune recipe, at a small size."""
    config = FinetuneConfig(epochs=1, max_train=256, max_test=64, out=str(out), progress=False)
    print(f'no model: fine-tuning a small one ({config})', flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        finetune(config)
    return out


@contextlib.contextmanager
def quiet_stderr():
    """Silence MXNet's C++ log lines (quantization notes on each excluded Concat, subgraph messages)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, 'w') as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    parser.add_argument('--quick', action='store_true',
                        help='128 test sentences (for CI); fine-tunes a tiny model if --model-dir is missing')
    parser.add_argument('--results', default=str(RESULTS), help='where to write the figures (JSON)')
    parser.add_argument('--test', type=int, default=None, help='use at most N test sentences (default: all)')
    parser.add_argument('--calib', type=int, default=None, help='training sentences for INT8 calibration')
    parser.add_argument('--calib-mode', choices=('naive', 'entropy'), default='naive')
    parser.add_argument('--percentile', type=float, default=99.99,
                        help='naive calibration: layer ranges at this percentile of observed values (100: min/max)')
    parser.add_argument('--granularity', choices=('tensor-wise', 'channel-wise'), default='tensor-wise',
                        help='INT8 weight scales per layer or per output channel')
    parser.add_argument('--exclude', nargs='*', default=[], help='layers of the fused graph to keep in float32')
    parser.add_argument('--rounds', type=int, default=None, help='interleaved rounds (the test set is split)')
    parser.add_argument('--latency', type=int, default=None, help='sentences timed one by one')
    args = parser.parse_args()
    warnings.filterwarnings('ignore')
    logging.getLogger().setLevel(logging.ERROR)
    n_test = args.test or (128 if args.quick else None)
    n_calib = args.calib or (64 if args.quick else 320)
    rounds = args.rounds or (2 if args.quick else 5)
    n_latency = args.latency or (8 if args.quick else 48)

    with tempfile.TemporaryDirectory(prefix='bench-predict-') as tmp:
        model_dir = Path(args.model_dir)
        if not (model_dir / 'model.params').is_file():
            if not args.quick:
                print(f'error: no fine-tuned model in {model_dir}. Make one with\n'
                      f'    python -m bert_tutorial finetune --out {model_dir}\n'
                      'or pass --model-dir DIR (or --quick, which fine-tunes a tiny model)', file=sys.stderr)
                return 2
            model_dir = tiny_model(Path(tmp) / 'model')
        ctx = mx.cpu()
        net, vocabulary, config = load_model(model_dir, ctx=ctx, model_type='classifier')
        max_len = config['max_len']
        tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
        exported, _, _ = load_model(export_classifier(model_dir, Path(tmp) / 'export'))
        fused = fuse_classifier(exported)
        calib_texts = [t for t, _ in subset(load_movie_reviews('train'), n_calib, seed=1)]
        start = time.perf_counter()
        with quiet_stderr():
            calib = [batch for _, batch in sentence_batches(calib_texts, tokenizer, vocabulary, max_len)]
            int8 = quantize_classifier(exported, calib, calib_mode=args.calib_mode, percentile=args.percentile,
                                       granularity=args.granularity, exclude_layers=args.exclude)
        quantize_seconds = time.perf_counter() - start
        layers = int8_layers(int8)
        print(f'INT8 graph: {len(layers["int8"])} of {len(layers["int8"]) + len(layers["float32"])} dense layers '
              f'INT8 ({args.granularity}, {args.calib_mode} calibration at percentile {args.percentile} on '
              f'{len(calib_texts)} training sentences, {quantize_seconds:.1f} s)', flush=True)

        test = subset(load_movie_reviews('test'), n_test, seed=0)
        texts, labels = [t for t, _ in test], np.array([y for _, y in test])
        variants = {  # name: (block, sort_by_length)
            'float32': (net, False), 'float32-sorted': (net, True), 'exported': (exported, False),
            'fused': (fused, False), 'int8': (int8, False), 'int8-sorted': (int8, True)}
        for block, sort in variants.values():  # warm-up: graph building, allocation, oneDNN kernels
            predict_sentiments(block, ctx, vocabulary, tokenizer, texts[:2 * BATCH_SIZE], max_len, BATCH_SIZE, sort)

        seconds = dict.fromkeys(variants, 0.0)
        preds: dict[str, list[str]] = {name: [] for name in variants}
        chunks = np.array_split(np.arange(len(texts)), rounds)
        names = list(variants)
        for r, chunk in enumerate(chunks):
            part = [texts[i] for i in chunk]
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                block, sort = variants[name]
                start = time.perf_counter()
                out = predict_sentiments(block, ctx, vocabulary, tokenizer, part, max_len, BATCH_SIZE, sort)
                seconds[name] += time.perf_counter() - start
                preds[name] += [label for label, _ in out]
            print(f'round {r + 1}/{rounds}: ' + ', '.join(f'{n} {sum(len(c) for c in chunks[:r + 1]) / seconds[n]:.0f}'
                                                          for n in names) + ' sentences/s', flush=True)

        latency: dict[str, list[float]] = {name: [] for name in ('float32', 'exported', 'fused', 'int8')}
        for i, sentence in enumerate(texts[:n_latency + 2]):
            order = list(latency)
            for name in order[i % len(order):] + order[:i % len(order)]:
                start = time.perf_counter()
                predict_sentiment(variants[name][0], ctx, vocabulary, tokenizer, sentence, max_len)
                if i >= 2:  # the first two are warm-up
                    latency[name].append(time.perf_counter() - start)

    start = time.perf_counter()
    transform = SentimentTransform(tokenizer, max_len)
    for t in texts:
        transform(t)
    tokenize_ms = (time.perf_counter() - start) / len(texts) * 1e3

    label_ids = {label: i for i, label in enumerate(LABELS)}
    results: dict = {'variants': {}}
    for name in variants:
        pred = np.array([label_ids[p] for p in preds[name]])
        results['variants'][name] = {
            'sentences_per_second': len(texts) / seconds[name],
            'accuracy': float(np.mean(pred == labels)),
            'agreement_with_float32': float(np.mean(pred == np.array([label_ids[p] for p in preds['float32']]))),
        }
        if name in latency:
            results['variants'][name]['latency_ms_median'] = statistics.median(latency[name]) * 1e3
    v = results['variants']
    results.update({
        'int8_speedup': v['int8']['sentences_per_second'] / v['float32']['sentences_per_second'],
        'int8_sorted_speedup': v['int8-sorted']['sentences_per_second'] / v['float32']['sentences_per_second'],
        'int8_speedup_vs_fused': v['int8']['sentences_per_second'] / v['fused']['sentences_per_second'],
        'fused_speedup_vs_exported': v['fused']['sentences_per_second'] / v['exported']['sentences_per_second'],
        'exported_speedup': v['exported']['sentences_per_second'] / v['float32']['sentences_per_second'],
        'sorted_speedup': v['float32-sorted']['sentences_per_second'] / v['float32']['sentences_per_second'],
        'int8_accuracy_drop': v['float32']['accuracy'] - v['int8']['accuracy'],
        'int8_agreement': v['int8']['agreement_with_float32'],
        'int8_latency_speedup': v['float32']['latency_ms_median'] / v['int8']['latency_ms_median'],
        'int8_dense_layers': len(layers['int8']), 'dense_layers': len(layers['int8']) + len(layers['float32']),
        'calib_mode': args.calib_mode, 'percentile': args.percentile, 'granularity': args.granularity,
        'excluded_layers': args.exclude,
        'calib_sentences': len(calib_texts), 'quantize_seconds': quantize_seconds,
        'tokenize_ms_per_sentence': tokenize_ms, 'test_sentences': len(texts), 'rounds': rounds,
        'latency_sentences': n_latency, 'batch_size': BATCH_SIZE, 'max_len': max_len,
        'model_dir': str(args.model_dir) if Path(args.model_dir, 'model.params').is_file() else 'tiny (--quick)',
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'cpu_count': os.cpu_count(),
        'bert_tutorial_version': bert_tutorial.__version__,
        'measured': measured(),
    })
    results['bars'] = {'int8_speedup_at_least_2x': results['int8_speedup'] >= 2.0,
                       'int8_accuracy_within_1_point': results['int8_accuracy_drop'] <= 0.01}

    print(f"\n{'variant':15s} {'sent/s':>8s} {'latency ms':>10s} {'accuracy':>8s} {'agrees':>7s}")
    for name, f in v.items():
        lat = f"{f['latency_ms_median']:10.1f}" if 'latency_ms_median' in f else f"{'':10s}"
        print(f"{name:15s} {f['sentences_per_second']:8.1f} {lat} {f['accuracy']:8.4f} "
              f"{f['agreement_with_float32']:7.1%}")
    print(f"\nint8 vs float32 predict_sentiments: {results['int8_speedup']:.2f}x throughput "
          f"({results['int8_sorted_speedup']:.2f}x with length sorting), {results['int8_latency_speedup']:.2f}x "
          f"single-sentence latency; accuracy drop {100 * results['int8_accuracy_drop']:+.2f} points "
          f"({results['int8_dense_layers']}/{results['dense_layers']} dense layers INT8)")
    print(f"fused vs exported float32: {results['fused_speedup_vs_exported']:.2f}x; exported vs float32: "
          f"{results['exported_speedup']:.2f}x; length sorting: {results['sorted_speedup']:.2f}x; "
          f"tokenizing: {tokenize_ms:.2f} ms a sentence")
    print('bars: ' + ', '.join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in results['bars'].items()))
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
