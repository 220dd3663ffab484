"""The tutorial's ``train_loop`` for sentence classification, with checkpoints, resumption and seeding.

Call it as the tutorial does, ``train_loop(net, train_data, test_data, num_epoch, lr, ctx, loss_fn)``; the
keyword-only options default to the original ``utils.train_loop``'s recipe (BERTAdam, weight decay 0.01,
linear warm-up then linear decay, gradient clipping at global norm 1, a log line every 50 batches).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from .checkpoint import epoch_seed, save_checkpoint, seed_everything
from .checkpoint import resume as resume_from
from .optimizer import FusedBERTAdam

log = logging.getLogger(__name__)


def as_context_list(ctx) -> list[mx.Context]:
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
    if not contexts or not all(isinstance(c, mx.Context) for c in contexts):
        raise ValueError(f'ctx must be an mxnet Context or a list of them, got {ctx!r}')
    return contexts


def _split(batch, contexts: list[mx.Context]):
    """One ``(ids, valid_len, segments, label)`` shard per context (the whole batch when there is one)."""
    if len(contexts) == 1:
        return [[x.as_in_context(contexts[0]) for x in batch]]
    parts = [gluon.utils.split_and_load(x, contexts, even_split=False) for x in batch]
    return list(zip(*parts))


def evaluate_accuracy(net, data, ctx) -> float:
    """Accuracy over all examples of ``data`` (counted per example, so a short last batch weighs less; the
    original averaged per-batch accuracies)."""
    contexts = as_context_list(ctx)
    correct = total = 0
    for batch in data:
        for ids, valid_len, segments, label in _split(batch, contexts):
            pred = net(ids, segments, valid_len).argmax(axis=1)
            correct += int((pred == label.astype(pred.dtype)).sum().asscalar())
            total += label.shape[0]
    if total == 0:
        raise ValueError('test_data is empty')
    return correct / total


TUTORIAL_WARMUP_STEPS = 50


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


def train_loop(net, train_data, test_data, num_epoch: int, lr: float, ctx, loss_fn, *,
               optimizer: str = 'bertadam', weight_decay: float = 0.01, no_decay_norm_bias: bool = False,
               warmup_steps: int = TUTORIAL_WARMUP_STEPS, warmup_ratio: float | None = None,
               loss_reduction: str = 'sum', clip: float | None = 1.0, log_interval: int = 50,
               checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, resume: bool = False,
               seed: int = 0, progress: bool = True, skip_nonfinite: bool = False, kvstore: str = 'device',
               callback=None) -> list[dict]:
    """Fine-tune ``net`` on ``train_data`` for ``num_epoch`` epochs; returns one dict per epoch
    (``epoch``, ``train_loss``, ``train_accuracy``, ``test_accuracy``, ``samples_per_second``, ``seconds``).

    Called with the tutorial's seven arguments it runs the tutorial's recipe: BERTAdam with weight decay 0.01 on
    every parameter, ``warmup_steps=50`` of linear warm-up then linear decay to 0 (``lr_schedule``), the gradient
    of the batch's summed loss (``loss_reduction='sum'``) clipped to global norm 1, a log line every 50 batches.
    The package's own recipe (``finetune``) asks for ``no_decay_norm_bias=True``, ``warmup_ratio=0.1`` (warm-up
    over that share of all steps, instead of ``warmup_steps``) and ``loss_reduction='mean'``.

    Batches are ``(token_ids, valid_length, segment_ids, label)``; ``ctx`` is a context or a list of contexts
    (each batch is split across them). With ``checkpoint_dir``, a checkpoint is written after every epoch (and
    every ``checkpoint_every`` steps); ``resume=True`` continues from the newest one. Every epoch reseeds all
    generators from ``(seed, epoch)`` and every step reseeds MXNet's from ``(seed, step)``, so a resumed run
    replays what an uninterrupted one does. A non-finite loss or gradient raises ``FloatingPointError`` naming
    the step, or skips the step when ``skip_nonfinite``. ``callback(record)`` is called at every log line and
    epoch end with ``epoch`` (fractional), ``train_loss``, ``train_accuracy`` and, at epoch ends, ``test_accuracy``
    (for live plots such as d2l's ``Animator``).
    """
    if num_epoch < 1:
        raise ValueError(f'num_epoch must be >= 1, got {num_epoch}')
    if lr <= 0:
        raise ValueError(f'lr must be > 0, got {lr}')
    if loss_reduction not in ('sum', 'mean'):
        raise ValueError(f"loss_reduction must be 'sum' (the tutorial) or 'mean', got {loss_reduction!r}")
    if warmup_ratio is not None and not 0 <= warmup_ratio < 1:
        raise ValueError(f'warmup_ratio must be in [0, 1) or None, got {warmup_ratio}')
    contexts = as_context_list(ctx)
    steps_per_epoch = len(train_data)
    if steps_per_epoch == 0:
        raise ValueError('train_data is empty')
    total_steps = num_epoch * steps_per_epoch
    if warmup_ratio is not None:
        warmup_steps = max(1, int(warmup_ratio * total_steps))
    trainer = make_trainer(net, lr, optimizer, weight_decay, kvstore, no_decay_norm_bias=no_decay_norm_bias,
                           lr_scheduler=lr_schedule(lr, total_steps, warmup_steps))
    params = [p for p in net.collect_params().values() if p.grad_req != 'null']

    history: list[dict] = []
    step = start_epoch = 0
    state = resume_from(checkpoint_dir, net, trainer, ctx=contexts) if resume else None
    if state is not None:
        step, history, start_epoch = state['step'], state['history'], state['epoch']

    def checkpoint(epoch_done: int):
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, net, trainer, {'step': step, 'epoch': epoch_done, 'history': history,
                                                           'seed': seed})

    for epoch in range(start_epoch, num_epoch):
        seed_everything(epoch_seed(seed, epoch))
        batches = iter(train_data)  # the sampler draws this epoch's order now
        skip = step - epoch * steps_per_epoch  # batches of this epoch done before a mid-epoch checkpoint
        for _ in range(skip):
            next(batches)
        metric, loss_sum, seen, start = mx.metric.Accuracy(), 0.0, 0, time.time()
        bar = tqdm(batches, total=steps_per_epoch, initial=skip, desc=f'epoch {epoch}', disable=not progress,
                   leave=False)
        for i, batch in enumerate(bar, start=skip):
            mx.random.seed(epoch_seed(seed, 10_000_019 + step))
            shards = _split(batch, contexts)
            batch_size = batch[0].shape[0]
            with autograd.record():
                outs = [net(ids, segments, valid_len) for ids, valid_len, segments, _ in shards]
                losses = [loss_fn(out, shard[3]) for out, shard in zip(outs, shards)]  # (shard_size,) each
                if loss_reduction == 'mean':
                    losses = [loss.sum() / batch_size for loss in losses]
            for loss in losses:
                loss.backward()  # of a vector: the gradient of its sum
            loss_value = sum(loss.sum().asscalar() for loss in losses)
            if loss_reduction == 'sum':
                loss_value /= batch_size  # logged per example either way
            trainer.allreduce_grads()
            if clipped_update(trainer, params, clip, loss_value, f'step {step} (epoch {epoch}, batch {i})',
                              skip_nonfinite):
                for out, shard in zip(outs, shards):
                    metric.update([shard[3]], [out])
                loss_sum += loss_value * batch_size
                seen += batch_size
            step += 1
            if i % log_interval == 0:
                bar.write(f'Batch {i} Accuracy {metric.get()[1]} Loss {loss_sum / max(seen, 1)}')
                if callback is not None:
                    callback({'epoch': epoch + (i + 1) / steps_per_epoch, 'train_loss': loss_sum / max(seen, 1),
                              'train_accuracy': metric.get()[1]})
            bar.set_postfix(loss=f'{loss_sum / max(seen, 1):.4f}', acc=f'{metric.get()[1]:.4f}')
            if checkpoint_every and step % checkpoint_every == 0 and i + 1 < steps_per_epoch:
                checkpoint(epoch)
        bar.close()
        seconds = time.time() - start
        train_loss = loss_sum / max(seen, 1)
        print(f'Epoch {epoch}, Accuracy {metric.get()}, Loss {train_loss}')
        test_accuracy = evaluate_accuracy(net, test_data, contexts) if test_data is not None else None
        if test_accuracy is not None:
            print(f'Test Accuracy {test_accuracy}')
        history.append({'epoch': epoch, 'train_loss': train_loss, 'train_accuracy': metric.get()[1],
                        'test_accuracy': test_accuracy, 'samples_per_second': seen / seconds if seconds else None,
                        'seconds': seconds})
        if callback is not None:
            callback({'epoch': epoch + 1.0, 'train_loss': train_loss, 'train_accuracy': metric.get()[1],
                      'test_accuracy': test_accuracy})
        checkpoint(epoch + 1)
    return history


def clipped_update(trainer: gluon.Trainer, params: Sequence[gluon.Parameter], clip: float | None,
                   loss_value: float, where: str, skip_nonfinite: bool) -> bool:
    """Update with the gradients clipped to global norm ``clip`` (``None``: no clipping); True when applied.

    A non-finite loss or gradient norm raises ``FloatingPointError`` naming ``where`` or, with ``skip_nonfinite``,
    logs a warning and skips the update. The clipping factor rides on the optimizer's gradient rescaling
    (``trainer.update(1 / factor)``) instead of a separate pass that rewrites every gradient array.
    """
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
