"""What the fine-tuning and pre-training loops share: seeding, resuming inside an epoch, the trainer and its
learning-rate schedule, and the clipped update with its guard against non-finite steps.

Reproducibility: MXNet cannot read back its generator's state, so every epoch reseeds Python's, numpy's and MXNet's
generators from ``(seed, epoch)`` (data order, masking) and every step reseeds MXNet's from ``(seed, step)``
(dropout). A run resumed from a checkpoint at any step therefore replays what an uninterrupted run does.
"""
from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import gluon

from .speed.optimizer import FusedBERTAdam

log = logging.getLogger(__name__)

# Step seeds are epoch seeds of "epochs" past this prime, so that a step never reuses an epoch's seed.
STEP_SEED_OFFSET = 10_000_019


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and MXNet's generators (MXNet's on every context)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: data order, dropout and masking of epoch ``epoch`` depend on it alone."""
    return (seed * 1_000_003 + epoch) % 2**31


def seed_step(seed: int, step: int) -> None:
    """Seed MXNet's generator (dropout) for optimizer step ``step`` of a run seeded with ``seed``."""
    mx.random.seed(epoch_seed(seed, STEP_SEED_OFFSET + step))


def epoch_batches(loader: Iterable, seed: int, epoch: int, done: int = 0,
                  before_epoch: Callable[[int], object] | None = None) -> Iterator:
    """The batches of epoch ``epoch``: generators reseeded from ``(seed, epoch)``, ``before_epoch(epoch seed)``
    called (e.g. to draw new masks), then the first ``done`` batches skipped (those a checkpoint already trained on).
    """
    seed_everything(epoch_seed(seed, epoch))
    if before_epoch is not None:
        before_epoch(epoch_seed(seed, epoch))
    batches = iter(loader)  # the sampler draws this epoch's order now
    for _ in range(done):
        next(batches)
    return batches


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a progress bar: as asked, else only on a terminal (log lines stay readable elsewhere)."""
    return sys.stderr.isatty() if progress is None else progress


def lr_schedule(lr: float, total_steps: int, warmup_steps: int) -> mx.lr_scheduler.PolyScheduler:
    """The tutorial's schedule, fed the optimizer's update count ``n`` (1 for the first update):
    ``lr * n / warmup_steps`` while ``n < warmup_steps``, then ``lr * (1 - (n - warmup_steps) / (total_steps -
    warmup_steps))``, which is 0 at the last step. ``warmup_steps`` is capped at ``total_steps - 1`` so that a short
    run still reaches ``lr`` and decays (the tutorial divides by zero when the run is 50 steps long)."""
    if total_steps < 1:
        raise ValueError(f'total_steps must be >= 1, got {total_steps}')
    if warmup_steps < 0:
        raise ValueError(f'warmup_steps must be >= 0, got {warmup_steps}')
    capped = min(warmup_steps, total_steps - 1)
    if capped < warmup_steps:
        log.warning('a run of %d steps: warm-up capped at %d steps (asked for %d)', total_steps, capped, warmup_steps)
    return mx.lr_scheduler.PolyScheduler(total_steps, base_lr=lr, pwr=1, warmup_steps=capped, warmup_mode='linear')


def make_trainer(net, lr: float, optimizer: str = 'bertadam', weight_decay: float = 0.01, kvstore: str = 'device',
                 *, no_decay_norm_bias: bool = False, lr_scheduler: mx.lr_scheduler.LRScheduler | None = None
                 ) -> gluon.Trainer:
    """A ``Trainer`` over the trainable parameters of ``net`` (tied weights once).

    ``weight_decay`` applies to every parameter, as in the tutorial; ``no_decay_norm_bias`` exempts LayerNorm's
    ``gamma``/``beta`` and biases (GluonNLP's fine-tuning scripts). ``'bertadam'`` runs on ``FusedBERTAdam``
    (the same update, faster). With ``lr_scheduler`` the learning rate follows the optimizer's update count.
    """
    # Keyed by structural names ('bert.encoder...'): Trainer orders parameters by key, and the optimizer states
    # of a checkpoint are stored by that order, so it must not depend on global name counters ('dense99_').
    params = {}
    for k, p in net._collect_params_with_prefix().items():
        if p.grad_req != 'null' and all(p is not q for q in params.values()):  # tied weights once
            params[k] = p
    if no_decay_norm_bias:
        for p in net.collect_params('.*gamma|.*beta|.*bias').values():
            p.wd_mult = 0.0
    opt_args = {'learning_rate': lr, 'wd': weight_decay}
    if lr_scheduler is not None:
        opt_args['lr_scheduler'] = lr_scheduler
    if optimizer in ('bertadam', 'adam', 'adamw'):
        opt_args['epsilon'] = 1e-6
    if optimizer == 'bertadam':  # the same update on a faster kernel
        optimizer = FusedBERTAdam(**opt_args)
        opt_args = None
    # update_on_kvstore=False: gradients are clipped between allreduce and update.
    return gluon.Trainer(params, optimizer, opt_args, kvstore=kvstore, update_on_kvstore=False)


def clipped_update(trainer: gluon.Trainer, params: Sequence[gluon.Parameter], clip: float | None, loss_value: float,
           where: str, skip_nonfinite: bool) -> bool:
    """One optimizer step after ``backward``: gradients all-reduced, clipped to global norm ``clip`` (``None``: not
    clipped), applied; True when applied.

    A non-finite loss or gradient norm raises ``FloatingPointError`` naming ``where`` or, with ``skip_nonfinite``,
    logs a warning and skips the update (the schedule then does not advance). The clipping factor rides on the
    optimizer's gradient rescaling (``trainer.update(1 / factor)``) instead of a pass that rewrites every gradient.
    """
    trainer.allreduce_grads()
    norm = float(nlp.utils.grad_global_norm(params).asscalar())
    if not finite_step(loss_value, norm, where, skip_nonfinite):
        return False
    factor = 1.0 if clip is None or norm <= clip else clip / norm
    trainer.update(1.0 / factor)
    return True


def finite_step(loss_value: float, grad_norm: float, where: str, skip: bool) -> bool:
    """True when a step may be applied; a non-finite loss or gradient norm raises ``FloatingPointError`` naming
    ``where`` or, with ``skip``, logs a warning and returns False."""
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        return True
    what = 'loss' if not math.isfinite(loss_value) else 'gradient norm'
    msg = f'non-finite {what} at {where}: loss {loss_value}, gradient norm {grad_norm}'
    if not skip:
        raise FloatingPointError(msg + '; lower the learning rate, or pass skip_nonfinite=True')
    log.warning('%s; skipping the step', msg)
    return False
