"""What the fine-tuning and pre-training loops share: seeding, resuming inside an epoch, the trainer and its
learning-rate schedule, and the clipped update with its guard against non-finite steps.

Reproducibility: MXNet cannot read back its generator's state, so every epoch reseeds Python's, numpy's and MXNet's
generators from ``(seed, epoch)`` (data order, masking) and every step reseeds MXNet's from ``(seed, step)``
(dropout). A run resumed from a checkpoint at any step therefore replays what an uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import gluon

from .checkpoint import check_fresh_start
from .checkpoint import resume as resume_from

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


# kvstore keys of the package's own, far from the Trainer's (0 .. number of parameters - 1).
STEPS_KEY, RESUMED_KEY, SETTINGS_KEY = 999_983, 999_979, 999_961


def is_distributed(kvstore) -> bool:
    """Whether ``kvstore`` is a parameter-server store shared by more than one worker."""
    return isinstance(kvstore, mx.kvstore.KVStore) and kvstore.type.startswith('dist') and kvstore.num_workers > 1


def gather(kvstore: mx.kvstore.KVStore, key: int, value: int, what: str) -> list[int]:
    """Every worker's ``value``, by rank: each pushes its own at its rank's position of a vector and the server
    sums them (a collective call: every worker must make it, with the same ``key``)."""
    values = mx.nd.zeros((kvstore.num_workers,))
    with watchdog.waiting(what):
        kvstore.init(key, values)
        values[kvstore.rank] = value
        kvstore.push(key, values)
        kvstore.pull(key, out=values)
        return [int(v) for v in values.asnumpy()]


def gather_rows(kvstore: mx.kvstore.KVStore, key: int, row: Sequence[int], what: str) -> list[list[int]]:
    """Every worker's ``row`` (integers in [0, 2**24): float32 holds them exactly), by rank, as ``gather`` does for
    one value (a collective call; every worker's row must have the same length)."""
    values = mx.nd.zeros((kvstore.num_workers, len(row)))
    with watchdog.waiting(what):
        kvstore.init(key, values)
        values[kvstore.rank] = mx.nd.array(row)
        kvstore.push(key, values)
        kvstore.pull(key, out=values)
        return values.asnumpy().astype(np.int64).tolist()


def _fingerprint(value) -> list[int]:
    """48 bits of the sha256 of a setting's JSON, as three 16-bit integers."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).digest()
    return [int.from_bytes(digest[i:i + 2], 'big') for i in (0, 2, 4)]


def agree_on_settings(kvstore: mx.kvstore.KVStore, settings: dict) -> None:
    """``ValueError`` on every worker, naming the settings, when the workers were not all started with the same
    ``settings`` (a worker with another learning rate would end with other parameters, silently): each worker's
    fingerprint of each setting is gathered through the kvstore and compared."""
    names = sorted(settings)
    rows = gather_rows(kvstore, SETTINGS_KEY, [v for name in names for v in _fingerprint([name, settings[name]])],
                       "the other workers' settings")
    differ = [name for i, name in enumerate(names) if len({tuple(r[3 * i:3 * i + 3]) for r in rows}) > 1]
    if differ:
        mine = ', '.join(f'{name}={settings[name]!r}' for name in differ)
        raise ValueError(f'the workers were started with different settings: {", ".join(differ)} differ between '
                         f'them (this worker, rank {kvstore.rank}, has {mine}); start every worker with the same '
                         'ones')


def share_parameters(trainer: gluon.Trainer) -> None:
    """Every worker's parameters set to rank 0's through the kvstore, and the copies landed, before the first step.

    Left to the Trainer, this happens inside the first step's gradient all-reduce, whose messages on the same keys are
    not ordered after it: in about one tiny run in four, a worker then ended with another output layer than the other
    (tests/test_distributed.py: 3 of 12 runs on 2026-12-07, 0 of 20 with this), silently."""
    with watchdog.waiting('the other workers to share the initial parameters'):
        trainer._init_kvstore()  # noqa: SLF001 -- Gluon creates and fills its kvstore lazily, at the first step
        trainer._init_params()  # noqa: SLF001
        mx.nd.waitall()


def start_run(net, trainer: gluon.Trainer, checkpoint_dir: str | os.PathLike | None, resume: bool, settings: dict,
              ctx=None, kvstore=None, accept: Collection[str] = ()) -> dict | None:
    """Where a training run starts: the state of the newest checkpoint in ``checkpoint_dir`` loaded into ``net`` and
    ``trainer`` with ``resume`` (refused when it was written with other ``settings``, but those in ``accept``), else
    ``None`` (refused over another run's checkpoints). On a parameter server every worker first checks that the others
    have the same settings, and all resume from the same step and take rank 0's parameters."""
    if trainer.distributed:  # every worker must compute the same steps
        agree_on_settings(kvstore, settings)
    if checkpoint_dir is not None and not resume:  # resuming, resume_from compares the settings
        check_fresh_start(checkpoint_dir)
    with watchdog.waiting('the other workers to resume') if trainer.distributed else contextlib.nullcontext():
        state = resume_from(checkpoint_dir, net, trainer, ctx=ctx, settings=settings, accept=accept) if resume else None
    if trainer.distributed:
        resumed = gather(kvstore, RESUMED_KEY, state['step'] if state else 0, 'the other workers to resume')
        if len(set(resumed)) > 1:
            raise ValueError(f'the workers resumed at different steps {resumed} (by rank): resume every worker from '
                             'checkpoints of the same step, or start afresh')
        share_parameters(trainer)
    return state


def agree_on_steps(kvstore: mx.kvstore.KVStore, steps: int) -> int:
    """The fewest batches an epoch that any worker has: every worker then runs that many steps an epoch and the
    same schedule (dist_sync steps are collective: a worker with one step more would wait for ever)."""
    counts = gather(kvstore, STEPS_KEY, steps, 'the other workers to start')
    agreed = min(counts)
    if agreed == 0:
        raise ValueError(f'a worker has no training batch (batches per worker: {counts}): give the workers more '
                         'training examples')
    if agreed < steps:
        log.info('batches an epoch per worker: %s; every worker runs %d (this one drops its last %d)', counts, agreed,
                 steps - agreed)
    return agreed


class Watchdog:
    """Ends the process (exit code 3) with a message when a wait on the other workers of a parameter server lasts
    longer than ``timeout`` seconds: a worker that died leaves the others blocked in calls that cannot be
    interrupted. ``$BERT_TUTORIAL_DIST_TIMEOUT`` (default 120) sets it."""

    def __init__(self, timeout: float | None = None):
        self._timeout, self._since, self._what, self._thread = timeout, None, '', None

    @property
    def timeout(self) -> float:
        """The seconds a wait may last: as given, else ``$BERT_TUTORIAL_DIST_TIMEOUT`` (read each time), else 120;
        ``ValueError`` naming the variable unless a finite number >= 1 (the watchdog looks once a second; 0 would end
        a healthy cluster at once, infinity or NaN never end a stuck one)."""
        if self._timeout is not None:
            return self._timeout
        value = os.environ.get('BERT_TUTORIAL_DIST_TIMEOUT', '120')
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 1):
            raise ValueError(f'BERT_TUTORIAL_DIST_TIMEOUT must be a finite number of seconds >= 1, got {value!r}')
        return seconds

    @contextlib.contextmanager
    def waiting(self, what: str):
        self.timeout  # noqa: B018 -- a malformed setting fails here, in the caller, not in the thread
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name='bert_tutorial-watchdog', daemon=True)
            self._thread.start()
        self._since, self._what = time.monotonic(), what
        try:
            yield
        finally:
            self._since = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                sys.stderr.write(f'error: waited {self.timeout:.0f} s for {self._what} without an answer: another '
                                 'worker, a server or the scheduler has stopped; ending this worker\n')
                sys.stderr.flush()
                os._exit(3)


watchdog = Watchdog()


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


def make_trainer(net, lr: float, optimizer: str | Callable[..., mx.optimizer.Optimizer] = 'bertadam',
                 weight_decay: float = 0.01, kvstore: str = 'device', *, no_decay_norm_bias: bool = False,
                 lr_scheduler: mx.lr_scheduler.LRScheduler | None = None, kernels: bool | None = None) -> gluon.Trainer:
    """A ``Trainer`` over the trainable parameters of ``net`` (tied weights once).

    ``weight_decay`` applies to every parameter, as in the tutorial; ``no_decay_norm_bias`` exempts LayerNorm's
    ``gamma``/``beta`` and biases (GluonNLP's fine-tuning scripts). ``optimizer`` is a name in MXNet's registry
    (``'bertadam'``: GluonNLP's ``BERTAdam``, the tutorial's), or a callable that makes the optimizer from its
    keyword arguments (``learning_rate``, ``wd``, ``epsilon``, ``lr_scheduler``), such as the one the speed plug-in's
    ``accelerate`` returns. With ``lr_scheduler`` the learning rate follows the optimizer's update count.
    ``kernels`` (deprecated, 0.5's switch of ``'fusedbertadam'``'s kernels) is passed on to that optimizer.
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
    if not isinstance(optimizer, str) or optimizer in ('bertadam', 'fusedbertadam', 'adam', 'adamw'):
        opt_args['epsilon'] = 1e-6
    if kernels is not None:
        warnings.warn("make_trainer(kernels=...) is deprecated since 0.6: pass optimizer=accelerate(net).optimizer "
                      '(the speed plug-in chooses the kernels); it goes in 0.7', FutureWarning, stacklevel=2)
        takes_kernels = optimizer == 'fusedbertadam' if isinstance(optimizer, str) else \
            'kernels' in inspect.signature(optimizer).parameters
        if takes_kernels:  # 0.5's switch of FusedBERTAdam's kernels; any other optimizer has none to switch
            opt_args['kernels'] = kernels
    if not isinstance(optimizer, str):
        optimizer, opt_args = optimizer(**opt_args), None
    elif optimizer.lower() not in mx.optimizer.Optimizer.opt_registry:
        hint = (": it is the speed plug-in's; pass optimizer=bert_tutorial.speed.accelerate(net).optimizer"
                if optimizer == 'fusedbertadam' else '')
        raise ValueError(f'optimizer must be a name in MXNet\'s optimizer registry (e.g. \'bertadam\'), got '
                         f'{optimizer!r}{hint}')
    # update_on_kvstore=False: gradients are clipped between allreduce and update.
    trainer = gluon.Trainer(params, optimizer, opt_args, kvstore=kvstore, update_on_kvstore=False)
    trainer.distributed = is_distributed(kvstore)
    trainer.workers = kvstore.num_workers if trainer.distributed else 1
    return trainer


def update_rule(optimizer: str | Callable) -> str:
    """The update an optimizer computes, as checkpoints record it: its name, or a callable's ``rule`` (the speed
    plug-in's ``FusedBERTAdam`` is ``'bertadam'``: runs of either resume alike)."""
    if isinstance(optimizer, str):
        return 'bertadam' if optimizer == 'fusedbertadam' else optimizer
    return getattr(optimizer, 'rule', None) or getattr(optimizer, '__name__', type(optimizer).__name__).lower()


def gradient_norm(trainer: gluon.Trainer, params: Sequence[gluon.Parameter]) -> float:
    """The global L2 norm of the gradients of ``params``: the optimizer's own ``global_norm`` when it has one (the
    speed plug-in's kernel), else GluonNLP's ``grad_global_norm`` (what the tutorial's ``clip_grad_global_norm``
    takes)."""
    own = getattr(trainer.optimizer, 'global_norm', None)
    norm = own(params) if own is not None else nlp.utils.grad_global_norm(params)
    return float(norm.asscalar())


def clipped_update(trainer: gluon.Trainer, params: Sequence[gluon.Parameter], clip: float | None, loss_value: float,
                   where: str, skip_nonfinite: bool, grad_scale: float = 1.0) -> bool:
    """One optimizer step after ``backward``: gradients all-reduced, clipped to global norm ``clip`` (``None``: not
    clipped), applied; True when applied.

    A non-finite loss or gradient norm raises ``FloatingPointError`` naming ``where`` or, with ``skip_nonfinite``,
    logs a warning and skips the update (the schedule then does not advance). The clipping factor rides on the
    optimizer's gradient rescaling (``trainer.update(1 / factor)``) instead of a pass that rewrites every gradient.
    On a parameter server the decision rests on the all-reduced gradient norm alone, which every worker shares (a
    worker's own loss is not), so that all of them skip or raise together. ``grad_scale`` multiplies the (all-reduced)
    gradients first, e.g. ``1 / workers`` for the mean over every worker's batch.
    """
    if getattr(trainer, 'distributed', False):  # set by make_trainer
        with watchdog.waiting('the gradients of the other workers'):
            trainer.allreduce_grads()
            norm = gradient_norm(trainer, params)
        if not math.isfinite(loss_value) and math.isfinite(norm):
            log.warning('non-finite loss %s at %s on this worker only; the shared gradients are finite', loss_value,
                        where)
        loss_value = 0.0
    else:
        trainer.allreduce_grads()
        norm = gradient_norm(trainer, params)
    if not finite_step(loss_value, norm, where, skip_nonfinite):
        return False
    norm *= grad_scale
    factor = grad_scale * (1.0 if clip is None or norm <= clip else clip / norm)
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
