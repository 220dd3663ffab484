"""The fine-tuning pipelines the speed benchmarks time, built as the package builds them: what ``bench_finetune.py``
and ``profile_step.py`` share (so that profile_step.py no longer imports bench_finetune.py, which runs its profile:
no import circle).

Every pipeline is ``build_classifier(...)`` on the built-in model (mean pooling, dropout 0.1 before the output
layer, the word embedding trained), then as ``finetune`` trains it on a CPU:
- default (``finetune``, ``--fast``): ``accelerate(net)``, the speed plug-in's one switch (the kernels this
  machine's choice picks, ``bert_tutorial.speed.choice``, and the dropout kernel), then
  ``make_trainer(net, lr, acceleration.optimizer)``: ``FusedBERTAdam``, its update and gradient norm on the kernels
  the choice picks;
- every-kernel: the same under ``choice.override('all')``: every kernel, whatever the choice (0.4's default);
- mxnet-ops: ``accelerate(net, ops=False)`` (what the deprecated ``finetune --mxnet-ops`` runs): MXNet's dense
  layers, softmax, attention products and GELU; LayerNorm, dropout and the optimizer as the default;
- mxnet (``finetune --no-fast``): nothing accelerated: MXNet's operators and GluonNLP's ``BERTAdam`` with its
  gradient norm, as the tutorial's ``train_loop``; no C++ kernel, nothing compiled;
- matmul and v0.3 (``profile_step.py``'s history): ``MatmulLayerNorm`` (0.2's default), the LayerNorm kernel
  (0.3's), the rest MXNet's, and ``FusedBERTAdam`` on MXNet's ``adam_update``.
Each is hybridized (``static_alloc``) after its blocks are swapped; the trainer exempts LayerNorm and biases from
weight decay (``no_decay_norm_bias``), as ``finetune``'s recipe does.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

# MXNet's OpenMP pool waits passively (see bench_finetune.py); set before MXNet starts, whichever script comes first.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import gluonnlp as nlp  # noqa: E402
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from bert_tutorial.loop import clipped_update, make_trainer  # noqa: E402
from bert_tutorial.recipes.finetuning import build_classifier  # noqa: E402
from bert_tutorial.speed import accelerate, choice  # noqa: E402

LR, CLIP, MAX_LEN, BATCH = 5e-5, 1.0, 128, 32

# name -> (the kernel choice it runs under, None: this machine's; accelerate's switches)
ACCELERATED = {
    'default': (None, {}),
    'every-kernel': ('all', {}),
    'mxnet-ops': (None, {'ops': False}),
    'matmul': ('none', {'dropout': False}),
    'v0.3': ('none,layer_norm=on', {'dropout': False}),
}
PIPELINES = (*ACCELERATED, 'mxnet')


def build_pipeline(name: str, bert: Any, ctx: mx.Context) -> tuple:
    """``(net, trainer)`` of the pipeline ``name`` (one of ``PIPELINES``) on ``bert`` (use it once: its blocks are
    swapped) and ``ctx``, and what ``accelerate`` did (``None`` for mxnet)."""
    net = build_classifier(bert, [ctx], pooling='mean', dropout=0.1, hybridize=False)
    acceleration = None
    if name == 'mxnet':  # finetune --no-fast
        trainer = make_trainer(net, LR, 'bertadam', no_decay_norm_bias=True)
    else:
        kernels, switches = ACCELERATED[name]
        # the optimizer reads the choice when it is made: under the same override as the blocks
        with choice.override(kernels) if kernels else contextlib.nullcontext():
            acceleration = accelerate(net, ctx, **switches)
            trainer = make_trainer(net, LR, acceleration.optimizer, no_decay_norm_bias=True)
    net.hybridize(static_alloc=True)
    return net, trainer, acceleration


class MXNetVariant:
    """One MXNet pipeline: a classifier, its trainer, and its step (the tutorial's or the package's)."""

    def __init__(self, name: str, net, trainer, batches, tutorial_step: bool):
        self.name, self.net, self.trainer, self.batches = name, net, trainer, batches
        self.tutorial_step = tutorial_step
        self.params = [p for p in net.collect_params().values() if p.grad_req != 'null']
        self.loss_fn = gluon.loss.SoftmaxCELoss()

    def step(self, batch) -> int:
        ids, valid_len, segments, label = batch
        with autograd.record():
            loss = self.loss_fn(self.net(ids, segments, valid_len), label)
            if not self.tutorial_step:
                loss = loss.mean()
        loss.backward()  # the tutorial's: of the loss vector, the gradient of the batch's summed loss
        self.trainer.allreduce_grads()
        if self.tutorial_step:
            nlp.utils.clip_grad_global_norm(self.params, CLIP)
            self.trainer.update(1)
        else:  # train_loop's: the gradient norm from the optimizer (the kernel's) or GluonNLP's
            clipped_update(self.trainer, self.params, CLIP, float(loss.asscalar()), self.name, False)
        loss.wait_to_read()
        return ids.shape[0]
