"""The tutorial's training loop: ``train_loop`` and ``evaluate_accuracy``, as its ``utils`` gave them.

``train_loop(net, train_data, test_data, num_epoch, lr, ctx, loss_fn)`` runs the tutorial's recipe on MXNet's and
GluonNLP's operators; keyword options add what the tutorial did not have (checkpoints and resume, several contexts,
a parameter server, a callback, another optimizer such as the speed plug-in's).
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Collection
from pathlib import Path

import mxnet as mx
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from ..checkpoint import BestParameters, save_checkpoint
from ..checks import MAX_SEED, check_settings, fraction, integer, one_of, positive
from ..devices import as_context_list
from ..loop import (
    agree_on_steps,
    clipped_update,
    epoch_batches,
    is_distributed,
    lr_schedule,
    make_trainer,
    seed_step,
    show_progress,
    start_run,
    update_rule,
)

log = logging.getLogger(__name__)

TUTORIAL_WARMUP_STEPS = 50


def _split(batch, contexts: list[mx.Context]):
    """One ``(ids, valid_len, segments, label)`` shard per context (the whole batch when there is one); batches
    from loader worker processes (``cpu_shared``) are moved to the context."""
    if len(contexts) == 1:
        return [[x.as_in_context(contexts[0]) for x in batch]]
    parts = [gluon.utils.split_and_load(x, contexts, even_split=False) for x in batch]
    return list(zip(*parts))


def evaluate_accuracy(net, data, ctx) -> float:
    """Accuracy over all examples of ``data`` (counted per example, so a short last batch weighs less; the
    tutorial averaged per-batch accuracies)."""
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


def train_loop(net, train_data, test_data, num_epoch: int, lr: float, ctx, loss_fn, *,
               optimizer: str | Callable = 'bertadam', weight_decay: float = 0.01, no_decay_norm_bias: bool = False,
               warmup_steps: int = TUTORIAL_WARMUP_STEPS, warmup_ratio: float | None = None,
               loss_reduction: str = 'sum', clip: float | None = 1.0, log_interval: int = 50,
               checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, resume: bool = False,
               seed: int = 0, progress: bool | None = None, skip_nonfinite: bool = False, kvstore: str = 'device',
               callback=None, run_settings: dict | None = None, accept_changes: Collection[str] = (),
               eval_name: str = 'Test', select: str = 'last') -> list[dict]:
    """Fine-tune ``net`` on ``train_data`` for ``num_epoch`` epochs; returns one dict per epoch
    (``epoch``, ``train_loss``, ``train_accuracy``, ``test_accuracy``, ``samples_per_second``, ``seconds``).

    ``test_data`` is scored after every epoch; ``eval_name='Validation'`` names it so (``Validation Accuracy``,
    ``validation_accuracy``), and ``select='best'`` leaves ``net`` with the parameters of its best epoch (kept
    beside the checkpoints, so a resumed run selects the same) instead of the last epoch's.

    Called with the tutorial's seven arguments it runs the tutorial's recipe on MXNet's and GluonNLP's operators
    alone (nothing compiled, no library loaded): GluonNLP's ``BERTAdam`` with weight decay 0.01 on every parameter,
    ``warmup_steps=50`` of linear warm-up then linear decay to 0 (``loop.lr_schedule``), the gradient of the batch's
    summed loss (``loss_reduction='sum'``) clipped to global norm 1 (GluonNLP's ``grad_global_norm``), the
    tutorial's log line every 50 batches. ``optimizer=bert_tutorial.speed.accelerate(net).optimizer`` is the one
    keyword that brings in the speed plug-in (``accelerate`` also puts its kernels into ``net``): the same update on
    ``FusedBERTAdam`` (C++ kernels, compiled on first use, and their gradient norm), as ``finetune`` runs it on a
    CPU. ``finetune`` also asks for ``no_decay_norm_bias=True``,
    ``warmup_ratio=0.1`` (warm-up over that share of all steps, instead of ``warmup_steps``) and
    ``loss_reduction='mean'``.

    Batches are ``(token_ids, valid_length, segment_ids, label)``; ``ctx`` is a context or a list of contexts
    (each batch is split across them). With ``checkpoint_dir``, a checkpoint is written after every epoch (and
    every ``checkpoint_every`` steps); ``resume=True`` continues from the newest one, replaying what an
    uninterrupted run does (``loop``), and refuses a checkpoint written with other settings (the recipe's, the
    number of batches, and ``run_settings``: what the caller's data and model depend on; ``accept_changes`` names
    those that may differ). A non-finite loss or
    gradient raises ``FloatingPointError`` naming the step, or skips the step when ``skip_nonfinite``. The
    tutorial's lines (``Batch``, ``Epoch``, ``Test Accuracy``) are printed; a progress bar is drawn on terminals
    (``progress``); ``callback(record)`` is called at every log line and epoch end with ``epoch`` (fractional),
    ``train_loss``, ``train_accuracy`` and, at epoch ends, ``test_accuracy`` (``validation_accuracy`` with
    ``eval_name='Validation'``; for live plots such as d2l's
    ``Animator``).
    """
    check_settings(dict(select=select, eval_name=eval_name), {'select': one_of('last', 'best'),
                                                               'eval_name': one_of('Test', 'Validation')})
    if select == 'best' and test_data is None:
        raise ValueError("select='best' needs data to score the epochs on (test_data)")
    check_settings(dict(num_epoch=num_epoch, lr=lr, loss_reduction=loss_reduction, warmup_steps=warmup_steps,
                        warmup_ratio=0 if warmup_ratio is None else warmup_ratio, log_interval=log_interval,
                        checkpoint_every=checkpoint_every, clip=1 if clip is None else clip, seed=seed), {
        'num_epoch': integer(1), 'lr': positive(), 'loss_reduction': one_of('sum', 'mean'),
        'warmup_steps': integer(0), 'warmup_ratio': fraction(), 'log_interval': integer(1),
        'checkpoint_every': integer(1, optional=True), 'clip': positive(), 'seed': integer(0, high=MAX_SEED)})
    contexts = as_context_list(ctx)
    steps_per_epoch = len(train_data)
    if is_distributed(kvstore):  # before anything can fail on one worker alone
        steps_per_epoch = agree_on_steps(kvstore, steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError('train_data is empty')
    total_steps = num_epoch * steps_per_epoch
    if warmup_ratio is not None:
        warmup_steps = max(1, int(warmup_ratio * total_steps))
    trainer = make_trainer(net, lr, optimizer, weight_decay, kvstore, no_decay_norm_bias=no_decay_norm_bias,
                           lr_scheduler=lr_schedule(lr, total_steps, warmup_steps))
    params = [p for p in net.collect_params().values() if p.grad_req != 'null']

    rule = update_rule(optimizer)  # the update, not its implementation: runs of either resume alike
    settings = dict(run_settings or {}, num_epoch=num_epoch, lr=lr, optimizer=rule, weight_decay=weight_decay,
                    no_decay_norm_bias=no_decay_norm_bias, warmup_steps=warmup_steps, loss_reduction=loss_reduction,
                    clip=clip, seed=seed, steps_per_epoch=steps_per_epoch)
    history: list[dict] = []
    step = start_epoch = 0
    state = start_run(net, trainer, checkpoint_dir, resume, settings, contexts, kvstore, accept_changes)
    running, best = {}, None
    if state is not None:
        step, history, start_epoch = state['step'], state['history'], state['epoch']
        running = state.get('running', {})  # the sums of the epoch a mid-epoch checkpoint interrupted
        best = state.get('best')
    key = f'{eval_name.lower()}_accuracy'
    best_params = BestParameters(net, checkpoint_dir)
    if state is not None:
        best_params.resumed(state['checkpoint_path'], state)

    def checkpoint(epoch_done: int, **running):
        if checkpoint_dir is not None:
            path = save_checkpoint(checkpoint_dir, net, trainer,
                                   {'step': step, 'epoch': epoch_done, 'history': history, 'seed': seed,
                                    'settings': settings, 'running': running, 'best': best},
                                   best=best_params.for_checkpoint())
            best_params.written(path)

    for epoch in range(start_epoch, num_epoch):
        skip = step - epoch * steps_per_epoch  # batches of this epoch done before a mid-epoch checkpoint
        batches = itertools.islice(epoch_batches(train_data, seed, epoch, skip), steps_per_epoch - skip)
        metric, start = mx.metric.Accuracy(), time.time()
        loss_sum, seen = (running.get('loss_sum', 0.0), running.get('seen', 0)) if skip else (0.0, 0)
        seen_before = seen  # trained before a mid-epoch checkpoint: not in this process's throughput
        if skip:
            metric.sum_metric, metric.num_inst = running.get('correct', 0), running.get('count', seen)
        bar = tqdm(batches, total=steps_per_epoch, initial=skip, desc=f'epoch {epoch}',
                   disable=not show_progress(progress), leave=False)
        for i, batch in enumerate(bar, start=skip):
            seed_step(seed, step)
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
            # the mean over every worker's batch, as one run on all of them would take it
            grad_scale = 1 / trainer.workers if loss_reduction == 'mean' else 1.0
            if clipped_update(trainer, params, clip, loss_value, f'step {step} (epoch {epoch}, batch {i})',
                              skip_nonfinite, grad_scale):
                for out, shard in zip(outs, shards):
                    metric.update([shard[3]], [out])
                if math.isfinite(loss_value):  # on a parameter server, this worker's loss alone may not be
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
                checkpoint(epoch, loss_sum=loss_sum, seen=seen, correct=metric.sum_metric, count=metric.num_inst)
        bar.close()
        seconds = time.time() - start
        train_loss = loss_sum / max(seen, 1)
        print(f'Epoch {epoch}, Accuracy {metric.get()}, Loss {train_loss}')
        accuracy = evaluate_accuracy(net, test_data, contexts) if test_data is not None else None
        if accuracy is not None:
            print(f'{eval_name} Accuracy {accuracy}')
        if select == 'best' and (best is None or accuracy > best['accuracy']):
            best = {'epoch': epoch, 'accuracy': accuracy}
            best_params.keep()
        history.append({'epoch': epoch, 'train_loss': train_loss, 'train_accuracy': metric.get()[1],
                        key: accuracy, 'samples_per_second': (seen - seen_before) / seconds if seconds else None,
                        'seconds': seconds})
        if callback is not None:
            callback({'epoch': epoch + 1.0, 'train_loss': train_loss, 'train_accuracy': metric.get()[1], key: accuracy})
        checkpoint(epoch + 1)
    if select == 'best' and best is not None:
        best_params.restore()
        log.info('kept the parameters of epoch %d (%s accuracy %.4f)', best['epoch'], eval_name.lower(),
                 best['accuracy'])
    return history
