"""Fine-tune and pre-train at a small size on the GPU and on the CPU from the same seed; print both.

    python tools/gpu_check.py [--out DIR]

Where MXNet sees a GPU (a CUDA build of MXNet: docs/install.md, "On a GPU"), it runs ``finetune`` (the built-in
model on 64 snippets of the built-in corpus, one epoch, scored on 32 test snippets) and ``pretrain`` (a 2-layer,
64-unit BERT on the built-in corpus, 20 steps) twice each, with ``--ctx gpu`` and ``--ctx cpu``, the same seed and
the same settings, and prints their losses and accuracies side by side with the differences.

Both runs of a pair compute the same thing: MXNet's operators (the package's speed plug-in is for CPUs and does
nothing on a GPU, so both runs switch it off, ``fast=False`` as ``--no-fast``: the CPU run's layers, LayerNorm
included, optimizer step and gradient norm are MXNet's and GluonNLP's ``BERTAdam``, as on the GPU) and no dropout
(MXNet draws a GPU's dropout masks from another generator than the CPU's, so with dropout the two runs would train
on other masks). What is left to differ is the arithmetic of the devices' kernels (cuBLAS and cuDNN against oneDNN:
other summation orders), which grows over the steps; the accuracies may differ by an example or two.
``finetune --ctx gpu`` takes every visible GPU (``CUDA_VISIBLE_DEVICES=0`` keeps it to one); ``pretrain`` takes the
first.

Without a GPU it says so (and why: no CUDA build, or no device visible) and exits 0.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

# mxnet 1.9.1 under numpy 1.23 warns at import (np.bool, distutils); nothing a user can act on.
warnings.filterwarnings('ignore', category=DeprecationWarning)

import mxnet as mx  # noqa: E402

# The checkout this file is in, before any installed copy: the tool checks the code beside it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bert_tutorial.devices import GPU_DOCS, no_gpu_reason  # noqa: E402

SEED = 0


def gpus() -> int:
    """The GPUs MXNet sees (0 when it cannot query them: a CUDA build without a working driver)."""
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:
        return 0


def finetune_pair(out: Path) -> dict[str, dict]:
    """``{'cpu': metrics, 'gpu': metrics}`` of two small fine-tuning runs that differ only in the device."""
    from bert_tutorial.recipes.finetuning import FinetuneConfig, finetune
    runs = {}
    for ctx in ('cpu', 'gpu'):
        config = FinetuneConfig(ctx=ctx, max_train=64, max_test=32, epochs=1, batch_size=16, max_len=64,
                                validation_fraction=0.0, select='last', dropout=0.0, bert_dropout=0.0, fast=False,
                                seed=SEED, out=str(out / f'finetune-{ctx}'), progress=False, log_interval=1000)
        runs[ctx] = finetune(config).metrics
    return runs


def pretrain_pair(out: Path) -> dict[str, dict]:
    """``{'cpu': metrics, 'gpu': metrics}`` of two small pre-training runs that differ only in the device."""
    from bert_tutorial.recipes.pretraining import PretrainConfig, pretrain
    runs = {}
    for ctx in ('cpu', 'gpu'):
        config = PretrainConfig(ctx=ctx, steps=20, eval_every=10, layers=2, units=64, hidden=128, heads=2,
                                max_len=32, batch_size=32, dropout=0.0, fast=False, seed=SEED,
                                out=str(out / f'pretrain-{ctx}'), progress=False)
        runs[ctx] = pretrain(config).metrics
    return runs


def table(title: str, rows: list[tuple[str, float, float]]) -> str:
    lines = [f'{title:34s} {"cpu":>10s} {"gpu":>10s} {"|gpu - cpu|":>12s}']
    lines += [f'  {name:32s} {cpu:10.6f} {gpu:10.6f} {abs(gpu - cpu):12.2e}' for name, cpu, gpu in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=None,
                        help='keep the four runs in this folder (default: a temporary folder, removed at the end)')
    args = parser.parse_args(argv)
    n = gpus()
    if n == 0:
        print(f'no GPU: {no_gpu_reason()}. Nothing to compare here.')
        return 0
    logging.basicConfig(level=logging.WARNING)
    print(f'{n} GPU(s) visible to MXNet {mx.__version__}; same seed ({SEED}), same settings, no dropout, '
          "MXNet's operators on both devices")
    with tempfile.TemporaryDirectory(prefix='gpu_check.') as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        ft = finetune_pair(out)
        ft_rows = [('train loss (epoch 0)', ft['cpu']['history'][0]['train_loss'],
                    ft['gpu']['history'][0]['train_loss']),
                   ('train accuracy (epoch 0)', ft['cpu']['train_accuracy'], ft['gpu']['train_accuracy']),
                   ('test accuracy', ft['cpu']['test_accuracy'], ft['gpu']['test_accuracy'])]
        print(table('finetune (64 snippets, 1 epoch)', ft_rows))
        pt = pretrain_pair(out)
        pt_rows = [(f'{key} (step {pt["cpu"]["history"][-1]["step"]})', pt['cpu'][key], pt['gpu'][key])
                   for key in ('mlm_loss', 'mlm_accuracy', 'nsp_accuracy')]
        pt_rows.insert(0, ('train MLM loss (last 10 steps)', pt['cpu']['history'][-1]['train_mlm_loss'],
                           pt['gpu']['history'][-1]['train_mlm_loss']))
        print(table('pretrain (2x64 BERT, 20 steps)', pt_rows))
    print(f'The losses differ by the devices\' float32 arithmetic alone (see {GPU_DOCS}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
