"""The package's sentiment recipe, ``finetune(FinetuneConfig)``: what ``python -m bert_tutorial finetune`` runs.

It loads a pre-trained BERT and the data, trains with the tutorial's ``train_loop`` on the package's recipe (and the
speed plug-in where it helps) and saves the model folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import gluon

from ..checkpoint import (
    DATA_KEY,
    check_run_dir,
    data_digests,
    finished_run,
    latest_settings,
    remove_checkpoints,
)
from ..checks import MAX_SEED, check_fields, compared_settings, fraction, integer, option, positive, setting
from ..devices import contexts, default_ctx, measured
from ..files import check_free_space, check_out_folder, check_run_folder, locked_output, write_atomic
from ..loop import (
    seed_everything,
    watchdog,
)
from ..speed.accelerate import accelerate, dropout_kernel_available
from ..tutorial.model import BERTClassifier
from ..tutorial.train import evaluate_accuracy, train_loop
from .encoders import GluonBERT, TutorialBERT
from .hub import DEFAULT_MODEL, classifier_config, get_pretrained_bert, save_model
from .results import RunResult
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

log = logging.getLogger(__name__)

# The files a run writes into its out folder (beside checkpoints/): checked before any work.
RUN_FILES = ('model.params', 'config.json', 'vocab.json', 'metrics.json', 'checkpoints/best.params')
# Checkpoints trained as sentence encoders with mean pooling (their [CLS] pooler was not trained for it).
SENTENCE_ENCODERS = {DEFAULT_MODEL}
# What replaces 0.5's speed switches (FinetuneConfig's deprecated fields; build_classifier's keywords).
USE_FAST = "--fast/--no-fast (fast=True/False) is the speed switch since 0.6; 0.5's switches go in 0.7"


# ---- the package's recipe -----------------------------------------------------------------------------------------

@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on. Each field's metadata (``checks.option``) is the one source of its
    ``python -m bert_tutorial finetune`` flag and help, its check and whether a resume compares it."""

    model: str = option(DEFAULT_MODEL, 'built-in model, GluonNLP zoo name, Hugging Face BERT directory, or a pretrain '
                        'output dir')
    data: str | None = option('movie-reviews', 'the built-in corpus or IMDB (not used with --train: then None, '
                              'recorded so)', choices=('movie-reviews', 'imdb'))
    imdb_root: str | None = option(None, 'folder with aclImdb/ or aclImdb_v1.tar.gz (--data imdb; None: the cache '
                                   'under MXNET_HOME)')
    train: str | None = option(None, 'your own data: a .csv, .tsv or .jsonl file of labelled text (None: --data)')
    validation: str | None = option(None, 'a file scored after every epoch (with --train; None: '
                                    '--validation-fraction of --train)')
    test: str | None = option(None, 'a file scored once, at the end (with --train; None: no test)')
    text_column: str = option('text', 'the column (or JSON key) of the text')
    text_pair_column: str | None = option(None, 'the second text of sentence pairs (None: single texts)')
    label_column: str = option('label', 'the column of the labels: any strings or integers; classes in numeric '
                               'order if all are integers, else alphabetical')
    validation_fraction: float = option(0.1, 'of the training data (of its movies for the built-in corpus) held out '
                                        'for validation, when no --validation file is given (0: none, then with '
                                        '--select last)', rule=fraction())
    select: str = option('best', 'keep the parameters of the last epoch, or of the best one on the validation data',
                         choices=('last', 'best'))
    epochs: int = option(3, 'passes over the training data', rule=integer(1))
    lr: float = option(5e-5, 'peak learning rate (after warm-up, then linear decay to 0)', rule=positive())
    warmup_ratio: float = option(0.1, 'warm-up over this share of all steps', rule=fraction())
    tutorial_recipe: bool = option(False, "the tutorial's train_loop recipe instead: weight decay on LayerNorm and "
                                   "biases too, 50 warm-up steps (not --warmup-ratio), the gradient of the batch's "
                                   'summed loss', flags={'--tutorial-recipe': True})
    batch_size: int = option(32, 'examples a step', rule=integer(1))
    max_len: int = option(128, "word pieces an example, [CLS] and [SEP] included (capped at the model's positions)",
                          rule=integer(3))
    max_train: int | None = option(None, 'use at most N training examples (None: all)',
                                   rule=integer(1, optional=True))
    max_test: int | None = option(None, 'use at most N test examples, and at most N validation examples (None: all)',
                                  rule=integer(1, optional=True))
    dropout: float = option(0.1, 'dropout before the output layer (the tutorial: 0)', rule=fraction())
    pooling: str = option('auto', "sentence encoding: pooled [CLS] (the tutorial) or the mean over tokens; auto: mean "
                          'for sentence encoders (all-MiniLM-L6-v2), cls otherwise', choices=('auto', 'cls', 'mean'))
    bert_dropout: float = option(0.1, 'dropout inside BERT', rule=fraction())
    bucket: bool = option(True, 'pad to the longest in a random batch (by default batches hold examples of similar '
                          'length: FixedBucketSampler)', flags={'--no-bucket': False})
    hybridize: bool = option(True, 'run the model imperatively instead of as a hybridized (static) graph',
                             flags={'--no-hybridize': False}, free='compute')
    fast: bool = option(True, "on a CPU, the speed plug-in: its C++ kernels where they are faster on this machine "
                        "(timed once and cached; BERT_TUTORIAL_KERNEL_CHOICE overrides), its dropout kernel (other "
                        "masks than MXNet's from the same seed) and FusedBERTAdam; it does nothing on a GPU. "
                        "--no-fast: MXNet's operators and GluonNLP's BERTAdam, as the tutorial", free='compute')
    accept_other_dropout_masks: bool = option(
        False, "with --resume: continue a run whose checkpoint was trained with the other dropout (the kernel's masks "
        "on a CPU with --fast, MXNet's elsewhere), with this run's masks from there on",
        flags={'--accept-other-dropout-masks': True}, free='compute')
    freeze_word_embed: bool = option(False, 'do not update the word embedding (faster on CPU; the default before 0.3)',
                                     flags={'--freeze-word-embed': True},
                                     hidden={'--train-word-embed': False})  # the default since 0.3: older lines
    ctx: str = option(default_ctx(), 'where to compute: the CPU, or every visible GPU (needs a CUDA build of MXNet: '
                      'see the install page); the default is gpu when MXNet sees one', choices=('cpu', 'gpu'),
                      free='compute')
    kvstore: str = option('device', 'dist_sync: data-parallel over workers started by mxnet/tools/launch.py or DMLC_* '
                          'variables', choices=('device', 'dist_sync', 'dist_device_sync'))
    num_workers: int = option(0, "data loader worker processes (the tutorial's loaders used 4)", rule=integer(0),
                              free='compute')
    seed: int = option(0, 'seeds the held-out split, the new layer, the batch order and the dropout masks',
                       rule=integer(0, high=MAX_SEED))
    out: str = option('runs/finetune', 'the output folder: the model, its config and vocabulary, metrics.json (and '
                      'checkpoints until the run finishes)', free='output')
    resume: bool = option(False, 'continue from the last checkpoint in --out (a finished run says so and exits 0)',
                          flags={'--resume': True}, free='output')
    checkpoint_every: int | None = option(None, 'also checkpoint every N steps (None: after every epoch only)',
                                          rule=integer(1, optional=True), free='output')
    keep_checkpoints: bool = option(False, 'keep --out/checkpoints when the run finishes (by default they are removed '
                                    'then: they exist to resume a run that stopped)',
                                    flags={'--keep-checkpoints': True}, free='output')
    log_interval: int = option(50, "print the tutorial's Batch line every N batches", rule=integer(1), free='output')
    progress: bool | None = option(None, 'no progress bar (by default one is drawn on terminals only)',
                                   flags={'--no-progress': False}, free='output')
    # 0.5's speed switches, deprecated (None: as fast says; the names go in 0.7): each turns one part of fast off
    matmul_layer_norm: bool | None = option(None, "False: MXNet's LayerNorm", hidden={'--native-layer-norm': False},
                                            free='compute', deprecated=USE_FAST)
    kernel_dropout: bool | None = option(None, "False: MXNet's Dropout",
                                         hidden={'--mxnet-dropout': False, '--kernel-dropout': True},
                                         free='compute', deprecated=USE_FAST)
    kernel_ops: bool | None = option(None, "False: MXNet's dense, softmax, GELU and attention operators",
                                     hidden={'--mxnet-ops': False}, free='compute', deprecated=USE_FAST)

    def __post_init__(self):
        used = [f'{name}={getattr(self, name)}' for name in DEPRECATED_SPEED if getattr(self, name) is not None]
        if used:
            warnings.warn(f'FinetuneConfig({", ".join(used)}) is deprecated: fast=True/False is the speed switch '
                          'since 0.6 (the old names go in 0.7)', FutureWarning, stacklevel=3)

    def run_settings(self) -> dict:
        """The settings a checkpoint of this run depends on: all but those a resume may change (``free``: where it
        writes, how it reports and computes); and the sha256 of the data files it reads (``data_sha256``).
        ``finetune`` adds ``kernel_dropout``: whether the dropout kernel ran (its masks), whatever asked for it."""
        settings = compared_settings(self)
        settings[DATA_KEY] = data_digests({'train': self.train, 'validation': self.validation, 'test': self.test})
        # the model the run starts from, when it is a folder (a pretrain output, a Hugging Face checkpoint): replaced
        # between a kill and --resume, it would pair the checkpoint's weights with another vocabulary, silently
        settings[DATA_KEY].update(data_digests({'model': self.model}, pattern='*'))
        return settings

    def check(self) -> None:
        """``ValueError`` naming the first setting out of its range, and what the range is."""
        # data is None (not one of its choices) as finetune records a run on the user's files
        check_fields(self, skip=('data',) if self.train and self.data is None else ())
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


DEPRECATED_SPEED = tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata['deprecated'])


class FinetuneResult(RunResult):
    """What ``finetune`` returns (``RunResult``): ``model`` is the fine-tuned ``BERTClassifier``, ``history`` one
    record per epoch."""

    def result_line(self) -> str:
        """The test accuracy when there was test data, else the validation accuracy of the epoch kept, else (nothing
        held out) its training accuracy, saying which."""
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
        return f"{score} after {len(self.history)} epoch(s), {m['seconds']:.0f} s; model saved in {self.out}"


def build_classifier(bert: GluonBERT | TutorialBERT, ctx: list[mx.Context], num_classes: int = 2,
                     pooling: str = 'mean', dropout: float = 0.1, freeze_word_embed: bool = False,
                     hybridize: bool = True, **deprecated) -> BERTClassifier:
    """The classifier as ``finetune`` trains it: a new output layer on ``bert``, on MXNet's operators
    (``speed.accelerate(net)`` before the first call speeds it up, as ``finetune`` does with ``fast``).

    ``matmul_layer_norm``, ``kernel_dropout``, ``kernel_ops`` (0.5's speed switches) are deprecated: given, the
    classifier is accelerated with them, as in 0.5."""
    unknown = set(deprecated) - set(DEPRECATED_SPEED)
    if unknown:
        raise TypeError(f'build_classifier() got unexpected keyword arguments {sorted(unknown)}')
    if freeze_word_embed:
        # The word embedding is 30522 x units: its dense Adam update is a large fixed cost of a short batch on CPU.
        bert.word_embedding.collect_params().setattr('grad_req', 'null')
    net = BERTClassifier(bert, num_classes, dropout=dropout, pooling=pooling)
    net.classifier.initialize(mx.init.Normal(0.02), ctx=ctx)
    if len(ctx) > 1:
        net.collect_params().reset_ctx(ctx)
    if deprecated:
        warnings.warn(f'build_classifier({", ".join(sorted(deprecated))}=...) is deprecated since 0.6: call '
                      'bert_tutorial.speed.accelerate(net) (the old names go in 0.7)', FutureWarning, stacklevel=2)
        flags = {name: deprecated.get(name, True) for name in DEPRECATED_SPEED}
        if any(flags.values()):
            accelerate(net, ctx, dropout=flags['kernel_dropout'], layer_norm=flags['matmul_layer_norm'],
                       ops=flags['kernel_ops'])
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


def check_dropout_masks(out: Path, config: FinetuneConfig, kernel_dropout: bool) -> tuple[str, ...]:
    """Before a resume: ``ValueError`` when the checkpoint in ``out`` was trained with the other dropout (the
    kernel's masks against MXNet's: a CPU with ``fast`` against a GPU, ``--no-fast`` or a machine without the
    kernels), naming the flag that accepts it; with ``accept_other_dropout_masks`` a warning, and the settings that
    may then differ from the checkpoint's."""
    saved = latest_settings(out) if config.resume else None
    if saved is None or saved.get('kernel_dropout', kernel_dropout) == kernel_dropout:
        return ()
    had, has = ("the dropout kernel's masks", "MXNet's Dropout") if saved['kernel_dropout'] else \
        ("MXNet's Dropout", "the dropout kernel's masks")
    where = ('a CPU with fast (--fast) where the C++ kernels build' if saved['kernel_dropout'] else
             f'{"a GPU, " if config.ctx == "cpu" else ""}fast=False (--no-fast) or a machine without the kernels')
    if not config.accept_other_dropout_masks:
        raise ValueError(f'resume: the checkpoint in {out} was trained with {had}; this run would draw {has} '
                         f'(ctx {config.ctx}, fast={config.fast}): the rest of the run would differ from an '
                         f'uninterrupted one. Resume on {where}, or pass {setting("accept_other_dropout_masks")} '
                         'to continue with these masks from here on')
    log.warning('resume: the checkpoint was trained with %s; continuing with %s from here on '
                '(accept_other_dropout_masks)', had, has)
    return ('kernel_dropout',)


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune a pre-trained BERT for sentiment as ``config`` says; writes the model folder (``save_model``),
    ``metrics.json`` and checkpoints into ``config.out``."""
    config.check()
    for name in ('train', 'validation', 'test'):  # before the model loads, not after (it takes a while)
        path = getattr(config, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f'{setting(name)}: {path} does not exist (expected a .csv, .tsv or .jsonl file '
                                    'of labelled text)')
    check_out_folder(config.out, (config.model, config.imdb_root))
    if config.kvstore.startswith('dist'):
        watchdog.timeout  # noqa: B018 -- a malformed $BERT_TUTORIAL_DIST_TIMEOUT fails before any work
    if config.train is not None and config.data is not None:
        # The built-in corpus is not used: recorded as such (metrics.json, the checkpoints' settings).
        with warnings.catch_warnings():  # a deprecated switch was warned about when the config was made
            warnings.simplefilter('ignore', FutureWarning)
            config = dataclasses.replace(config, data=None)
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
    # The dropout kernel's masks are not MXNet's: recorded, so that a resume where it cannot run (a GPU, --no-fast, no
    # kernels) refuses instead of continuing on other masks, unless accept_other_dropout_masks says to.
    # A finished run has nothing left to run: whichever dropout would run does not matter (nor do the kernels build).
    finished_before = config.resume and finished_run(out) is not None
    settings['kernel_dropout'] = not finished_before and config.fast and config.kernel_dropout is not False and \
        dropout_kernel_available(config.ctx)
    accept = ('kernel_dropout',) if finished_before else check_dropout_masks(out, config, settings['kernel_dropout'])
    finished = check_run_dir(out, config.resume, settings, accept=accept)
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
                           freeze_word_embed=config.freeze_word_embed, hybridize=False)
    if config.fast:
        acceleration = accelerate(net, ctx, dropout=settings['kernel_dropout'],
                                  layer_norm=config.matmul_layer_norm is not False,
                                  ops=config.kernel_ops is not False)
        optimizer, kernel_choice = acceleration.optimizer, acceleration.choice
    else:
        log.info("speed: off (fast=False, --no-fast): MXNet's operators and GluonNLP's BERTAdam")
        optimizer, kernel_choice = 'bertadam', None
    if config.hybridize:
        net.hybridize(static_alloc=True)
    net.labels = list(data.labels)  # as load_model gives them: predict_sentiments(result.model, ...) names them so
    check_free_space(out, net.collect_params(), 'fine-tuning')  # before training, not at its first checkpoint
    # The package's recipe (GluonNLP's fine-tuning script's choices); train_loop's defaults are the tutorial's.
    recipe = {} if config.tutorial_recipe else dict(no_decay_norm_bias=True, warmup_ratio=config.warmup_ratio,
                                                    loss_reduction='mean')
    recipe['optimizer'] = optimizer  # BERTAdam's update: GluonNLP's, or the speed plug-in's FusedBERTAdam
    # Epochs are scored on the validation data when there is some (the test data is then scored once, at the end,
    # with the selected parameters), else on the test data, as the tutorial does.
    scored = validation_data if validation_data is not None else test_data
    history = train_loop(net, train_data, scored, config.epochs, config.lr, ctx, gluon.loss.SoftmaxCELoss(),
                         **recipe, checkpoint_dir=out, resume=config.resume, seed=config.seed,
                         progress=config.progress, log_interval=config.log_interval,
                         checkpoint_every=config.checkpoint_every, kvstore=kvstore,
                         run_settings=settings, accept_changes=accept, select=config.select,
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
        # kernel_dropout as it ran (what a resume of the finished run compares), the other deprecated names as given
        'config': dict(dataclasses.asdict(config), kernel_dropout=settings['kernel_dropout']), 'history': history,
        'measured': measured(),
        # which C++ kernels ran (what the machine's measurement or the override chose), and why; None: none ran
        'kernel_choice': kernel_choice, 'kernel_dropout': settings['kernel_dropout'],
    }
    # metrics.json, written last, marks the run finished (resume then has nothing to do); the checkpoints go after it.
    write_atomic(out / 'metrics.json', json.dumps(metrics, indent=2))
    if not config.keep_checkpoints:
        remove_checkpoints(out)
    return FinetuneResult(net, vocabulary, history, metrics, out)
