"""Fine-tuning: the tutorial's ``train_loop``, and the package's sentiment recipe ``finetune(FinetuneConfig)``.

``train_loop(net, train_data, test_data, num_epoch, lr, ctx, loss_fn)`` runs the tutorial's recipe; keyword
options add what the tutorial did not have. ``finetune`` is what ``python -m bert_tutorial finetune`` runs: it loads
a pre-trained BERT and the data, trains with the package's recipe and saves the model folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from .assets import sha256_file
from .checkpoint import (
    BEST,
    DATA_KEY,
    best_parameters,
    check_finite_file,
    check_fresh_start,
    check_run_dir,
    data_digests,
    nonfinite_parameter,
    remove_checkpoints,
    save_checkpoint,
)
from .checkpoint import resume as resume_from
from .checks import MAX_SEED, check_settings, fraction, integer, one_of, positive, setting
from .devices import as_context_list, contexts, default_ctx, measured
from .encoders import GluonBERT, TutorialBERT
from .files import check_free_space, check_out_folder, check_run_folder, locked_output, write_atomic
from .hub import DEFAULT_MODEL, classifier_config, get_pretrained_bert, save_model
from .loop import (
    RESUMED_KEY,
    agree_on_settings,
    agree_on_steps,
    clipped_update,
    epoch_batches,
    gather,
    is_distributed,
    lr_schedule,
    make_trainer,
    seed_everything,
    seed_step,
    share_parameters,
    show_progress,
    watchdog,
)
from .model import BERTClassifier
from .sentiment_data import (
    LABELS,
    check_tokens,
    class_order,
    encode_labels,
    load_imdb,
    load_movie_reviews,
    read_labelled_lines,
    sentiment_loader,
    subset,
    transform_label,
)
from .speed.choice import choice_record, use_chosen_kernels
from .speed.kernels import load_kernels

log = logging.getLogger(__name__)

TUTORIAL_WARMUP_STEPS = 50
# The files a run writes into its out folder (beside checkpoints/): checked before any work.
RUN_FILES = ('model.params', 'config.json', 'vocab.json', 'metrics.json', 'checkpoints/best.params')
# Checkpoints trained as sentence encoders with mean pooling (their [CLS] pooler was not trained for it).
SENTENCE_ENCODERS = {DEFAULT_MODEL}


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
               optimizer: str = 'bertadam', weight_decay: float = 0.01, no_decay_norm_bias: bool = False,
               warmup_steps: int = TUTORIAL_WARMUP_STEPS, warmup_ratio: float | None = None,
               loss_reduction: str = 'sum', clip: float | None = 1.0, log_interval: int = 50,
               checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, resume: bool = False,
               seed: int = 0, progress: bool | None = None, skip_nonfinite: bool = False, kvstore: str = 'device',
               callback=None, run_settings: dict | None = None, eval_name: str = 'Test',
               select: str = 'last') -> list[dict]:
    """Fine-tune ``net`` on ``train_data`` for ``num_epoch`` epochs; returns one dict per epoch
    (``epoch``, ``train_loss``, ``train_accuracy``, ``test_accuracy``, ``samples_per_second``, ``seconds``).

    ``test_data`` is scored after every epoch; ``eval_name='Validation'`` names it so (``Validation Accuracy``,
    ``validation_accuracy``), and ``select='best'`` leaves ``net`` with the parameters of its best epoch (kept
    beside the checkpoints, so a resumed run selects the same) instead of the last epoch's.

    Called with the tutorial's seven arguments it runs the tutorial's recipe on MXNet's and GluonNLP's operators
    alone (nothing compiled, no library loaded): GluonNLP's ``BERTAdam`` with weight decay 0.01 on every parameter,
    ``warmup_steps=50`` of linear warm-up then linear decay to 0 (``loop.lr_schedule``), the gradient of the batch's
    summed loss (``loss_reduction='sum'``) clipped to global norm 1 (GluonNLP's ``grad_global_norm``), the
    tutorial's log line every 50 batches. ``optimizer='fusedbertadam'`` brings in the package's speed plug-in for
    the update: the same update on ``FusedBERTAdam`` (its C++ kernels, compiled on first use, and their gradient
    norm), as ``finetune`` and ``pretrain`` do. ``finetune`` also asks for ``no_decay_norm_bias=True``,
    ``warmup_ratio=0.1`` (warm-up over that share of all steps, instead of ``warmup_steps``) and
    ``loss_reduction='mean'``.

    Batches are ``(token_ids, valid_length, segment_ids, label)``; ``ctx`` is a context or a list of contexts
    (each batch is split across them). With ``checkpoint_dir``, a checkpoint is written after every epoch (and
    every ``checkpoint_every`` steps); ``resume=True`` continues from the newest one, replaying what an
    uninterrupted run does (``loop``), and refuses a checkpoint written with other settings (the recipe's, the
    number of batches, and ``run_settings``: what the caller's data and model depend on). A non-finite loss or
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

    # The update rule, not its implementation: 'fusedbertadam' is BERTAdam's update (runs of either resume alike).
    rule = 'bertadam' if optimizer == 'fusedbertadam' else str(optimizer)
    settings = dict(run_settings or {}, num_epoch=num_epoch, lr=lr, optimizer=rule, weight_decay=weight_decay,
                    no_decay_norm_bias=no_decay_norm_bias, warmup_steps=warmup_steps, loss_reduction=loss_reduction,
                    clip=clip, seed=seed, steps_per_epoch=steps_per_epoch)
    if trainer.distributed:  # every worker must compute the same steps
        agree_on_settings(kvstore, settings)
    history: list[dict] = []
    step = start_epoch = 0
    if checkpoint_dir is not None and not resume:  # resuming, resume_from compares the settings
        check_fresh_start(checkpoint_dir)
    with watchdog.waiting('the other workers to resume') if trainer.distributed else contextlib.nullcontext():
        state = resume_from(checkpoint_dir, net, trainer, ctx=contexts, settings=settings) if resume else None
    if trainer.distributed:
        resumed = gather(kvstore, RESUMED_KEY, state['step'] if state else 0, 'the other workers to resume')
        if len(set(resumed)) > 1:
            raise ValueError(f'the workers resumed at different steps {resumed} (by rank): resume every worker from '
                             'checkpoints of the same step, or start afresh')
        share_parameters(trainer)
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


class BestParameters:
    """A copy of ``net``'s parameters: with a ``checkpoint_dir``, in its checkpoints' ``best.params`` (verified by
    the sha256 their state records; a resumed run finds them there), else in memory."""

    def __init__(self, net, checkpoint_dir: str | Path | None):
        self.net, self._arrays = net, None
        self.on_disk = checkpoint_dir is not None
        self.pending = False  # kept, not yet written: the checkpoint written next holds them
        self.path: Path | None = None
        self.digest: str | None = None

    def keep(self) -> None:
        if self.on_disk:  # train_loop writes a checkpoint right after: its parameters are these
            self.pending = True
        else:
            self._arrays = {k: p.data().copy() for k, p in self.net._collect_params_with_prefix().items()}

    def resumed(self, checkpoint: Path, state: dict) -> None:
        """The best parameters that the checkpoint a run resumed from recorded."""
        found = best_parameters(checkpoint, state)
        if found is not None:
            self.path, self.digest = found

    def for_checkpoint(self) -> bool | tuple[Path, str | None] | None:
        """What the next checkpoint keeps as its ``best.params`` (``save_checkpoint``'s ``best``)."""
        return True if self.pending else (self.path, self.digest) if self.path is not None else None

    def written(self, checkpoint: Path) -> None:
        if (checkpoint / BEST).is_file():
            self.path = checkpoint / BEST
            self.digest = json.loads((checkpoint / 'state.json').read_text())['sha256'][BEST]
            self.pending = False

    def restore(self) -> None:
        if not self.on_disk:
            for k, p in self.net._collect_params_with_prefix().items():
                p.set_data(self._arrays[k])
            return
        if self.path is None or not self.path.is_file():
            raise ValueError(f'{self.path} is missing: it held the parameters of the best epoch')
        if self.digest is None:
            check_finite_file(self.path)
        elif sha256_file(self.path) != self.digest:
            raise ValueError(f'{self.path} does not match the sha256 recorded when it was written: the parameters of '
                             'the best epoch were damaged or changed; start afresh in another out folder')
        self.net.load_parameters(str(self.path), ctx=self.net.collect_params().list_ctx())
        bad = nonfinite_parameter(self.net)
        if bad is not None:
            raise ValueError(f'{self.path} holds NaN or inf ({bad})')


# ---- the package's recipe -----------------------------------------------------------------------------------------

@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; ``python -m bert_tutorial finetune`` has a flag for each field."""

    model: str = DEFAULT_MODEL        # built-in name, GluonNLP zoo name, Hugging Face folder or pretrain output
    data: str | None = 'movie-reviews'  # 'movie-reviews' (built in) or 'imdb'; None (recorded so) with a train file
    imdb_root: str | None = None      # folder with aclImdb/ or aclImdb_v1.tar.gz, for data='imdb'
    train: str | None = None          # your own data instead: a .csv, .tsv or .jsonl file of labelled text
    validation: str | None = None     # ... scored after every epoch (else validation_fraction of train is held out)
    test: str | None = None           # ... scored once, at the end
    text_column: str = 'text'
    text_pair_column: str | None = None  # sentence pairs: the second text's column
    label_column: str = 'label'       # any strings or integers; classes in class_order (numeric or alphabetical)
    validation_fraction: float = 0.1  # of the training data (of its movies, for the built-in corpus), held out
    select: str = 'best'              # the parameters of the 'best' epoch on validation, or of the 'last'
    epochs: int = 3
    lr: float = 5e-5
    warmup_ratio: float = 0.1         # warm-up over this share of all steps
    tutorial_recipe: bool = False     # train_loop's defaults instead: decay everywhere, 50 warm-up steps, summed loss
    batch_size: int = 32
    max_len: int = 128                # word pieces with [CLS] and [SEP]; capped at the model's positions
    max_train: int | None = None      # use at most this many training examples
    max_test: int | None = None       # ... and at most this many test examples, and as many validation examples
    dropout: float = 0.1              # before the output layer (the tutorial: 0)
    pooling: str = 'auto'             # 'cls' (the tutorial), 'mean', or 'auto': mean for sentence encoders
    bert_dropout: float = 0.1         # inside BERT
    bucket: bool = True               # batches of similar length (FixedBucketSampler)
    hybridize: bool = True
    # The operator kernels below run where this machine's choice picks them (speed.choice: timed once, cached).
    matmul_layer_norm: bool = True    # the C++ kernel LayerNorm (else MatmulLayerNorm) instead of MXNet's (slow on CPU)
    kernel_dropout: bool = True       # the C++ kernel Dropout (other masks than MXNet's, from the same seed); where
                                      # the kernels do not build, the run records False and uses MXNet's
    kernel_ops: bool = True           # dense, softmax, GELU, attention products on the C++ kernels (MXNet's values)
    freeze_word_embed: bool = False   # True: the word embedding stays as pre-trained (faster on CPU)
    ctx: str = default_ctx()
    kvstore: str = 'device'           # 'dist_sync': data-parallel over workers started by MXNet's launcher
    num_workers: int = 0              # data loader worker processes (the tutorial's loaders used 4)
    seed: int = 0
    out: str = 'runs/finetune'
    resume: bool = False
    checkpoint_every: int | None = None
    keep_checkpoints: bool = False    # keep out/checkpoints when the run finishes (they exist to resume a stopped one)
    log_interval: int = 50
    progress: bool | None = None      # a progress bar: None draws one on terminals only

    def run_settings(self) -> dict:
        """The settings a checkpoint of this run depends on: all but where it writes, how it reports, and speed
        settings that give the same values; and the sha256 of the data files it reads (``data_sha256``)."""
        harmless = {'out', 'resume', 'log_interval', 'progress', 'ctx', 'checkpoint_every', 'num_workers',
                    'hybridize', 'matmul_layer_norm', 'kernel_ops', 'keep_checkpoints'}
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in harmless}
        settings[DATA_KEY] = data_digests({'train': self.train, 'validation': self.validation, 'test': self.test})
        # the model the run starts from, when it is a folder (a pretrain output, a Hugging Face checkpoint): replaced
        # between a kill and --resume, it would pair the checkpoint's weights with another vocabulary, silently
        settings[DATA_KEY].update(data_digests({'model': self.model}, pattern='*'))
        return settings

    def check(self) -> None:
        """``ValueError`` naming the first setting out of its range, and what the range is."""
        rules = {
            'epochs': integer(1), 'batch_size': integer(1), 'max_len': integer(3), 'num_workers': integer(0),
            'max_train': integer(1, optional=True), 'max_test': integer(1, optional=True),
            'seed': integer(0, high=MAX_SEED),
            'log_interval': integer(1), 'checkpoint_every': integer(1, optional=True), 'lr': positive(),
            'warmup_ratio': fraction(), 'dropout': fraction(), 'bert_dropout': fraction(),
            'data': one_of('movie-reviews', 'imdb'), 'pooling': one_of('auto', 'cls', 'mean'),
            'ctx': one_of('cpu', 'gpu'), 'kvstore': one_of('device', 'dist_sync', 'dist_device_sync'),
            'validation_fraction': fraction(), 'select': one_of('last', 'best')}
        if self.train and self.data is None:  # as finetune records a run on the user's files
            del rules['data']
        check_settings(dataclasses.asdict(self), rules, flags=True)
        columns = ('text_column', 'text_pair_column', 'label_column')
        for i, first in enumerate(columns):
            for second in columns[i + 1:]:
                value = getattr(self, first)
                if value is not None and value == getattr(self, second):
                    raise ValueError(f'{setting(first)} and {setting(second)} are both {value!r}: the text, the '
                                     'second text and the label must be different columns')
        if (self.validation or self.test) and not self.train:
            raise ValueError(f'{setting("validation")} and {setting("test")} files go with a {setting("train")} file')
        if self.select == 'best' and not (self.validation or self.validation_fraction):
            raise ValueError(f"{setting('select')} 'best' needs validation data: a {setting('validation')} file or "
                             f"a {setting('validation_fraction')} above 0; or keep the last epoch with "
                             f"{setting('select')} 'last'")


@dataclass
class FinetuneResult:
    """What ``finetune`` returns: the fine-tuned classifier and its vocabulary, one history record per epoch, the
    ``metrics`` (also in ``out/metrics.json``) and the output folder. ``finished_before``: ``resume`` found the run
    already finished in ``out`` and trained nothing; ``model`` and ``vocabulary`` are then ``None`` (``load_model(out)``
    loads them) and the rest is read from ``metrics.json``."""

    model: BERTClassifier | None
    vocabulary: nlp.vocab.BERTVocab | None
    history: list[dict]
    metrics: dict
    out: Path
    finished_before: bool = False

    def summary(self) -> str:
        """The line ``python -m bert_tutorial finetune`` prints at the end: the test accuracy when there was test
        data, else the validation accuracy of the epoch kept, else (nothing held out) its training accuracy,
        saying which."""
        m = self.metrics
        kept = m.get('selected_epoch', len(self.history) - 1)
        if m.get('test_accuracy') is not None:
            score = f"test accuracy {m['test_accuracy']:.4f}"
            if m.get('validation_accuracy') is not None:
                score += f" (epoch {kept} kept, validation accuracy {m['validation_accuracy']:.4f})"
        elif m.get('validation_accuracy') is not None:
            score = f"validation accuracy {m['validation_accuracy']:.4f} of epoch {kept}, the one kept (no test data)"
        else:
            train = m.get('train_accuracy', self.history[kept]['train_accuracy'])
            score = (f"training accuracy {train:.4f} (epoch {kept}, measured while training; nothing was held out: "
                     "no validation or test data)")
        line = f"{score} after {len(self.history)} epoch(s), {m['seconds']:.0f} s; model saved in {self.out}"
        if self.finished_before:
            return f'this run had finished, nothing to resume (trained nothing, changed nothing): {line}'
        return line


def build_classifier(bert: GluonBERT | TutorialBERT, ctx: list[mx.Context], num_classes: int = 2,
                     pooling: str = 'mean', dropout: float = 0.1, freeze_word_embed: bool = False,
                     hybridize: bool = True, matmul_layer_norm: bool = True,
                     kernel_dropout: bool = True, kernel_ops: bool = True) -> BERTClassifier:
    """The classifier as ``finetune`` trains it: a new output layer on ``bert``, with the speed settings:
    ``matmul_layer_norm``, the package's C++ LayerNorm kernel (``MatmulLayerNorm`` where the kernels do not build);
    ``kernel_dropout``, its C++ Dropout kernel; ``kernel_ops``, its dense layers, softmax, GELU and self-attention
    products (MXNet's operators where the kernels do not build). Each operator kernel runs only where this machine's
    choice picks it (``speed.choice``: measured once against MXNet's operators, ``$BERT_TUTORIAL_KERNEL_CHOICE``
    overrides); dropout's as ``kernel_dropout`` says."""
    if freeze_word_embed:
        # The word embedding is 30522 x units: its dense Adam update is a large fixed cost of a short batch on CPU.
        bert.word_embedding.collect_params().setattr('grad_req', 'null')
    net = BERTClassifier(bert, num_classes, dropout=dropout, pooling=pooling)
    net.classifier.initialize(mx.init.Normal(0.02), ctx=ctx)
    if len(ctx) > 1:
        net.collect_params().reset_ctx(ctx)
    if matmul_layer_norm or kernel_dropout or kernel_ops:
        # each operator kernel where it beats MXNet's operator on this machine (speed.choice), dropout's as asked
        use_chosen_kernels(net, layer_norm=matmul_layer_norm, dropout=kernel_dropout, ops=kernel_ops)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


@dataclass
class Examples:
    """A run's data: ``(text[, text_pair], class index)`` lists (``validation``/``test``: ``None`` when there are
    none) and the class names, in the order of the model's outputs."""

    train: list
    validation: list | None
    test: list | None
    labels: list[str]


def load_examples(config: FinetuneConfig, tokenizer=None) -> Examples:
    """The training, validation and test examples the config asks for: the built-in corpus or IMDB (labels
    negative/positive), or the user's files (``train``, ``validation``, ``test``; classes in ``class_order`` of the
    training labels). Without a validation file, ``validation_fraction`` of the training data is held out (by
    movie for the built-in corpus). ``tokenizer``: refuse a file's text of no word it keeps, naming the line.
    A training split of fewer than two classes, or an empty split, is an error naming the setting that made it."""
    vf, seed = config.validation_fraction, config.seed
    validation = None
    if config.train is not None:
        text_columns = [config.text_column, *([config.text_pair_column] if config.text_pair_column else [])]

        def read(path):
            rows = read_labelled_lines(path, config.text_column, config.label_column,
                                       text_pair_column=config.text_pair_column)
            if tokenizer is not None:
                check_tokens(rows, tokenizer, path, text_columns)
            return rows

        def encode(path):
            rows = read(path)
            return encode_labels([row for _, row in rows], labels, path, [n for n, _ in rows])
        rows = [row for _, row in read(config.train)]
        labels = class_order(row[-1] for row in rows)
        if len(labels) < 2:
            raise ValueError(f'{config.train}: every example has the label {labels[0]!r}; a classifier needs two '
                             'classes or more')
        train = encode_labels(rows, labels, config.train)
        test = encode(config.test) if config.test else None
        if config.validation:
            validation = encode(config.validation)
    else:
        labels = list(LABELS)
        if config.data == 'movie-reviews':
            train = load_movie_reviews('train', seed=seed, validation_fraction=vf)
            validation = load_movie_reviews('validation', seed=seed, validation_fraction=vf) if vf else None
            test = load_movie_reviews('test', seed=seed)
        else:
            train = [transform_label(x) for x in load_imdb('train', config.imdb_root)]
            test = [transform_label(x) for x in load_imdb('test', config.imdb_root)]
    source = config.train or config.data
    held_out = validation is None and vf
    if held_out:
        held = set(random.Random(seed).sample(range(len(train)), max(1, round(vf * len(train)))))
        validation = [x for i, x in enumerate(train) if i in held]
        train = [x for i, x in enumerate(train) if i not in held]
    held_out = held_out or (config.train is None and vf)  # the built-in corpus holds out movies
    if not train:
        alternative = f', or give a {setting("validation")} file' if config.train else ''
        raise ValueError(f'{source}: {setting("validation_fraction")} {vf} holds out all {len(validation or [])} '
                         f'examples: none is left to train on; lower it{alternative}')
    if validation is not None and not validation:
        raise ValueError(f'{source}: {setting("validation_fraction")} {vf} holds out no example; raise it, or set '
                         f'it to 0 with {setting("select")} last')
    _two_classes(train, labels, source, f'after {setting("validation_fraction")} {vf} is held out, ' if held_out
                 else '')
    kept = subset(train, config.max_train, seed)
    if len(kept) < len(train):
        _two_classes(kept, labels, source, after=f'that {setting("max_train")} {config.max_train} keeps ')
    return Examples(kept, subset(validation, config.max_test, seed) if validation is not None else None,
                    subset(test, config.max_test, seed) if test is not None else None, labels)


def data_sources(config: FinetuneConfig) -> dict:
    """The data a run uses, as ``metrics.json`` records it: the ``train``, ``validation`` and ``test`` files (``None``
    where there is none), or the built-in ``corpus``; ``validation_fraction``: the share of the training data held
    out for validation (0 when a validation file is given or nothing is held out)."""
    held_out = 0.0 if config.validation else config.validation_fraction
    if config.train is not None:
        return {'train': config.train, 'validation': config.validation, 'test': config.test,
                'validation_fraction': held_out}
    return {'corpus': config.data, 'validation_fraction': held_out}


def describe_data(config: FinetuneConfig) -> str:
    """``data_sources`` in words, for the log."""
    sources = data_sources(config)
    held_out = sources['validation_fraction']
    if 'corpus' in sources:
        return (f'the {config.data} corpus (its train and test splits' +
                (f', {held_out:g} of the training {"movies" if config.data == "movie-reviews" else "examples"} '
                 'held out for validation)' if held_out else ', no validation)'))
    validation = (f'validation file {config.validation}' if config.validation else
                  f'{held_out:g} of it held out for validation' if held_out else 'no validation')
    test = f'test file {config.test}' if config.test else 'no test file'
    return f'training file {config.train} ({validation}; {test})'


def _two_classes(train: list, labels: list[str], source: str, before: str = '', after: str = '') -> None:
    """``ValueError`` when the training examples (label indices last) are all of one class: a classifier learns
    nothing from them, and would still answer."""
    present = sorted({x[-1] for x in train})
    if len(present) < 2:
        n = len(train)
        raise ValueError(f'{source}: {before}the {n} training example{"" if n == 1 else "s"} {after}'
                         f'{"has" if n == 1 else "have"} one class ({labels[present[0]]!r}); a classifier needs two '
                         'or more to learn from: give more data or hold out less')


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune a pre-trained BERT for sentiment as ``config`` says; writes the model folder (``save_model``),
    ``metrics.json`` and checkpoints into ``config.out``."""
    config.check()
    check_out_folder(config.out, (config.model, config.imdb_root))
    if config.kvstore.startswith('dist'):
        watchdog.timeout  # noqa: B018 -- a malformed $BERT_TUTORIAL_DIST_TIMEOUT fails before any work
    if config.train is not None and config.data is not None:
        # The built-in corpus is not used: recorded as such (metrics.json, the checkpoints' settings).
        config = dataclasses.replace(config, data=None)
    if config.kernel_dropout and not (config.ctx == 'cpu' and load_kernels()):
        # Recorded as it runs: a resume where the kernels are there then refuses instead of drawing other masks.
        log.info('kernel_dropout: no C++ kernels here (%s), MXNet\'s Dropout runs (kernel_dropout=False)',
                 'GPU' if config.ctx == 'gpu' else 'see the line above')
        config = dataclasses.replace(config, kernel_dropout=False)
    ctx = contexts(config.ctx)
    kvstore, out = config.kvstore, Path(config.out)
    if kvstore.startswith('dist'):
        missing = [v for v in ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_WORKER',
                               'DMLC_NUM_SERVER') if v not in os.environ]
        if missing:
            raise ValueError(f'kvstore {kvstore} needs a parameter-server cluster: start the workers with MXNet\'s '
                             f'launcher (mxnet/tools/launch.py), or set {", ".join(missing)}')
        # Workers started by MXNet's launcher (or the DMLC_* variables) each train on their own shard; worker 0
        # writes into out, the others into out/worker-N.
        with watchdog.waiting('the scheduler, the servers and the other workers to connect'):
            kvstore = mx.kv.create(kvstore)
        if kvstore.rank:
            out = out / f'worker-{kvstore.rank}'
    with locked_output(out) as out:
        result = _finetune(config, ctx, out, kvstore)
    if not isinstance(kvstore, str):
        # The end of a cluster run passes through the scheduler (MXNet's barrier at exit, which would block for ever
        # without it): met here, under the watchdog, a dead scheduler ends this worker with a message.
        with watchdog.waiting('the other workers and the scheduler at the end of the run'):
            kvstore._barrier()  # noqa: SLF001 -- MXNet 1.9 names its public barrier so
    return result


def _finetune(config: FinetuneConfig, ctx: list[mx.Context], out: Path, kvstore) -> FinetuneResult:
    check_run_folder(out, RUN_FILES, ('checkpoints',))  # before anything loads
    settings = config.run_settings()  # once: the data digests recorded are of the files as this run found them
    finished = check_run_dir(out, config.resume, settings)
    if finished is not None:
        log.info('%s holds a finished run (metrics.json): nothing to resume', out)
        return FinetuneResult(None, None, finished['history'], finished, out, finished_before=True)
    started = time.time()
    pooling = config.pooling
    if pooling == 'auto':  # sentence encoders were trained with mean pooling; BERT's pooler is for [CLS]
        pooling = 'mean' if config.model in SENTENCE_ENCODERS else 'cls'
    log.info('data: %s', describe_data(config))
    log.info('loading the pre-trained model %s', config.model)
    bert, vocabulary = get_pretrained_bert(config.model, ctx=ctx[0], dropout=config.bert_dropout,
                                           use_pooler=pooling == 'cls')
    max_len = config.max_len
    if max_len > bert.config['max_len']:
        log.warning('max_len %d is more than %s has positions for: using %d', max_len, config.model,
                    bert.config['max_len'])
        max_len = bert.config['max_len']
    tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
    data = load_examples(config, tokenizer)
    train = data.train
    if not isinstance(kvstore, str):
        train = train[kvstore.rank::kvstore.num_workers]
        log.info('worker %d of %d: %d training examples', kvstore.rank, kvstore.num_workers, len(train))

    def loader(examples, shuffle=False):
        if examples is None:
            return None
        return sentiment_loader(examples, tokenizer, vocabulary, max_len, config.batch_size, shuffle=shuffle,
                                bucket=config.bucket, num_workers=config.num_workers, num_classes=len(data.labels))

    train_data, validation_data, test_data = loader(train, True), loader(data.validation), loader(data.test)
    log.info('%d training, %d validation and %d test examples, %d batches an epoch', len(train),
             len(data.validation or []), len(data.test or []), len(train_data))
    for name, held in (('validation', data.validation), ('test', data.test)):
        if held and len(held) < 30:  # e.g. a tenth of examples/reviews.csv: one example
            log.warning('only %d %s example(s): each is %.0f%% of its accuracy, which says little; give more data '
                        '(or a --%s file)', len(held), name, 100 / len(held), name)

    seed_everything(config.seed)  # the new output layer's initial weights depend on the seed alone
    net = build_classifier(bert, ctx, len(data.labels), pooling=pooling, dropout=config.dropout,
                           freeze_word_embed=config.freeze_word_embed, hybridize=config.hybridize,
                           matmul_layer_norm=config.matmul_layer_norm, kernel_dropout=config.kernel_dropout,
                           kernel_ops=config.kernel_ops)
    net.labels = list(data.labels)  # as load_model gives them: predict_sentiments(result.model, ...) names them so
    check_free_space(out, net.collect_params(), 'fine-tuning')  # before training, not at its first checkpoint
    # The package's recipe (GluonNLP's fine-tuning script's choices); train_loop's defaults are the tutorial's.
    recipe = {} if config.tutorial_recipe else dict(no_decay_norm_bias=True, warmup_ratio=config.warmup_ratio,
                                                    loss_reduction='mean')
    recipe['optimizer'] = 'fusedbertadam'  # BERTAdam's update, fast (the C++ kernels, or adam_update without them)
    # Epochs are scored on the validation data when there is some (the test data is then scored once, at the end,
    # with the selected parameters), else on the test data, as the tutorial does.
    scored = validation_data if validation_data is not None else test_data
    history = train_loop(net, train_data, scored, config.epochs, config.lr, ctx, gluon.loss.SoftmaxCELoss(),
                         **recipe, checkpoint_dir=out, resume=config.resume, seed=config.seed,
                         progress=config.progress, log_interval=config.log_interval,
                         checkpoint_every=config.checkpoint_every, kvstore=kvstore,
                         run_settings=settings, select=config.select,
                         eval_name='Validation' if validation_data is not None else 'Test')
    save_model(out, net, vocabulary, classifier_config(net, max_len, data.labels, base_model=config.model,
                                                       columns=[config.text_column, config.text_pair_column,
                                                                config.label_column]))
    selected = max(range(len(history)), key=lambda e: (history[e].get('validation_accuracy') or -1, -e)) \
        if config.select == 'best' else len(history) - 1
    test_accuracy = history[-1].get('test_accuracy')
    if validation_data is not None and test_data is not None:
        test_accuracy = evaluate_accuracy(net, test_data, ctx)
        print(f'Test Accuracy {test_accuracy}')
    metrics = {
        'test_accuracy': test_accuracy,
        'validation_accuracy': history[selected].get('validation_accuracy'), 'selected_epoch': selected,
        'train_accuracy': history[selected]['train_accuracy'], 'data': data_sources(config),
        'labels': data.labels,
        'train_samples_per_second': sum(h['samples_per_second'] * h['seconds'] for h in history)
        / sum(h['seconds'] for h in history),
        'seconds': time.time() - started, 'num_train': len(train), 'num_validation': len(data.validation or []),
        'num_test': len(data.test or []), 'max_len': max_len,
        'config': dataclasses.asdict(config), 'history': history,
        'measured': measured(),
        # which C++ kernels ran (what the machine's measurement or the override chose), and why
        'kernel_choice': choice_record() if config.ctx == 'cpu' else None,
    }
    # metrics.json, written last, marks the run finished (resume then has nothing to do); the checkpoints go after it.
    write_atomic(out / 'metrics.json', json.dumps(metrics, indent=2))
    if not config.keep_checkpoints:
        remove_checkpoints(out)
    return FinetuneResult(net, vocabulary, history, metrics, out)
