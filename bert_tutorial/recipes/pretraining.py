"""BERT pre-training with the tutorial's classes: ``BERTEncoder`` + ``MLMDecoder`` + ``NSClassifier``.

``BERTPretrainModel`` joins them; ``pretrain_loop`` trains masked-LM and next-sentence prediction together;
``pretrain(PretrainConfig)`` is what ``python -m bert_tutorial pretrain`` runs: a corpus, a vocabulary, the model,
the loop, and an encoder folder (``TutorialBERT``, ``save_model``) that ``finetune`` takes as its model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from ..checkpoint import DATA_KEY, check_run_dir, data_digests, remove_checkpoints, save_checkpoint
from ..checks import (
    MAX_SEED,
    check_batch_positions,
    check_fields,
    compared_settings,
    fraction,
    integer,
    is_concrete,
    option,
    positive,
    setting,
)
from ..devices import contexts, default_ctx, measured
from ..files import check_free_space, check_out_folder, check_run_folder, locked_output, write_atomic
from ..loop import (
    clipped_update,
    epoch_batches,
    lr_schedule,
    make_trainer,
    seed_everything,
    seed_step,
    show_progress,
    start_run,
)
from ..speed import accelerate
from ..tutorial.model import BERTEncoder, MLMDecoder, NSClassifier
from ..tutorial.transformer import valid_length_mask
from ..vocab import build_vocab, load_vocabulary
from .encoders import SIZES, TutorialBERT
from .hub import save_model
from .pretraining_data import (
    PretrainingDataset,
    load_wikitext2,
    movie_review_documents,
    pretraining_loader,
    read_text_corpus,
    split_documents,
    tokenize_documents,
)
from .results import RunResult

log = logging.getLogger(__name__)

# The positions of BERT (BERTEncoder's default, every pre-trained BERT here): pretrain's max_len is capped at them.
MAX_POSITIONS = 512


class BERTPretrainModel(gluon.HybridBlock):
    """``(words, segments, valid_len, masked_positions)`` -> ``(encodings, mlm_scores, nsp_scores)``.

    ``words``, ``segments``: ``(batch_size, seq_len)``; ``valid_len``: ``(batch_size,)``;
    ``masked_positions``: ``(batch_size, num_pred)`` token positions per example.
    Outputs: ``(batch_size, seq_len, units)``, ``(batch_size, num_pred, vocab_size)``, ``(batch_size, 1)``.
    ``tie_weights``: the MLM output layer uses the word embedding matrix (as BERT does).
    """

    def __init__(self, vocab_size: int, units: int = 128, hidden_size: int = 256, num_heads: int = 2,
                 num_layers: int = 2, dropout: float = 0.1, max_len: int = 512, tie_weights: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(vocab_size=vocab_size, units=units, hidden_size=hidden_size, num_heads=num_heads,
                           num_layers=num_layers, dropout=dropout, max_len=max_len, tie_weights=tie_weights)
        self.encoder = BERTEncoder(vocab_size, units, hidden_size, num_heads, num_layers, dropout, max_len=max_len)
        self.mlm = MLMDecoder(vocab_size, units,
                              embed_params=self.encoder.word_embed.params if tie_weights else None)
        self.nsp = NSClassifier(units)

    def forward(self, words, segments, valid_len, masked_positions):
        if is_concrete(masked_positions):
            check_batch_positions(masked_positions, words.shape[0], words.shape[1], 'masked_positions')
        return super().forward(words, segments, valid_len, masked_positions)

    def to_encoder(self) -> TutorialBERT:
        """The encoder, with the next-sentence head's tanh layer as its pooler, for fine-tuning (shared weights)."""
        config = {'model_type': 'tutorial_bert', **{k: self.config[k] for k in SIZES}}
        return TutorialBERT(config, encoder=self.encoder, pooler=self.nsp.classifier[0])

    def hybrid_forward(self, F, words, segments, valid_len, masked_positions):
        X = self.encoder(words, segments, valid_length_mask(F, valid_len, words))
        # (batch_size, num_pred) positions -> gather_nd indices (2, batch_size * num_pred)
        batch_idx = F.broadcast_like(F.contrib.arange_like(masked_positions, axis=0).reshape((-1, 1)),
                                     masked_positions)
        idx = F.stack(batch_idx.reshape((-1,)), masked_positions.reshape((-1,)), axis=0)
        mlm_scores = self.mlm(X, idx)
        mlm_scores = F.reshape_like(mlm_scores, masked_positions, lhs_begin=0, lhs_end=1, rhs_begin=0, rhs_end=2)
        return X, mlm_scores, self.nsp(X)


def _losses(model, batch, mlm_loss_fn, nsp_loss_fn):
    words, segments, valid_len, positions, weights, labels, nsp_label = batch
    _, mlm_scores, nsp_scores = model(words, segments, valid_len, positions)
    # Padded prediction slots have weight 0: they add nothing to the loss or its gradient.
    mlm_loss = (mlm_loss_fn(mlm_scores.reshape((-1, mlm_scores.shape[-1])), labels.reshape((-1,)),
                            weights.reshape((-1, 1))).sum() / (weights.sum() + 1e-8))
    nsp_loss = nsp_loss_fn(nsp_scores, nsp_label).mean()
    return mlm_loss, nsp_loss, mlm_scores, nsp_scores


def evaluate_pretraining(model, data, ctx, baseline_token: int | None = None) -> dict:
    """Held-out ``mlm_loss`` (per predicted token), ``mlm_accuracy``, ``nsp_accuracy`` and, with
    ``baseline_token``, ``mlm_baseline_accuracy`` (always predicting that token)."""
    mlm_loss_fn = gluon.loss.SoftmaxCELoss()
    nsp_loss_fn = gluon.loss.SigmoidBCELoss()
    loss_sum = correct = base = n_pred = nsp_correct = n = 0.0
    for batch in data:
        batch = [x.as_in_context(ctx) for x in batch]
        weights, labels, nsp_label = batch[4], batch[5], batch[6]
        mlm_loss, _, mlm_scores, nsp_scores = _losses(model, batch, mlm_loss_fn, nsp_loss_fn)
        w = weights.sum().asscalar()
        loss_sum += mlm_loss.asscalar() * w
        correct += ((mlm_scores.argmax(axis=-1) == labels) * weights).sum().asscalar()
        if baseline_token is not None:
            base += ((labels == baseline_token) * weights).sum().asscalar()
        n_pred += w
        nsp_correct += ((nsp_scores.reshape((-1,)) > 0) == nsp_label).sum().asscalar()
        n += nsp_label.shape[0]
    if n == 0:
        raise ValueError('evaluation data is empty')
    out = {'mlm_loss': loss_sum / n_pred, 'mlm_accuracy': correct / n_pred, 'nsp_accuracy': nsp_correct / n}
    if baseline_token is not None:
        out['mlm_baseline_accuracy'] = base / n_pred
    return out


def pretrain_loop(model: BERTPretrainModel, train_data, eval_data, num_steps: int, lr: float, ctx, *,
                  warmup_ratio: float = 0.1, clip: float = 1.0, weight_decay: float = 0.01,
                  eval_every: int | None = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
                  seed: int = 0, baseline_token: int | None = None, progress: bool | None = None,
                  skip_nonfinite: bool = False, before_epoch: Callable[[int], object] | None = None,
                  run_settings: dict | None = None, optimizer: str | Callable | None = None) -> list[dict]:
    """Train masked LM + next-sentence prediction for ``num_steps`` steps; returns the evaluation history.

    ``train_data``: batches of a ``PretrainingDataset``; ``before_epoch(seed)`` is called at the start of every
    epoch with the epoch's seed (pass the dataset's ``resample`` to draw new pairs and masks each epoch). Every
    ``eval_every`` steps (default: every epoch) it logs MLM loss/accuracy and NSP accuracy on ``eval_data`` and writes
    a checkpoint to ``checkpoint_dir``; ``resume=True`` continues from the newest (refusing one written with other
    settings: the loop's, and ``run_settings``, what the caller's data and model depend on). BERTAdam's update (by
    default the optimizer ``accelerate`` gives for ``ctx``: on a CPU the speed plug-in's ``FusedBERTAdam``, its C++
    kernels where they build; elsewhere GluonNLP's, nothing built; ``optimizer='bertadam'``: GluonNLP's) with weight
    decay except on LayerNorm and biases, the tutorial's schedule with ``warmup_ratio`` of the steps as warm-up.
    """
    if num_steps < 1 or lr <= 0:
        raise ValueError(f'num_steps must be >= 1 and lr > 0, got {num_steps} and {lr}')
    steps_per_epoch = len(train_data)
    if steps_per_epoch == 0:
        raise ValueError('train_data is empty')
    eval_every = eval_every or steps_per_epoch
    warmup = max(1, int(warmup_ratio * num_steps))
    if optimizer is None:  # the plug-in's optimizer alone (no block swapped): FusedBERTAdam on a CPU only
        optimizer = accelerate(model, ctx, dropout=False, layer_norm=False, ops=False).optimizer
    trainer = make_trainer(model, lr, optimizer, weight_decay, no_decay_norm_bias=True,
                           lr_scheduler=lr_schedule(lr, num_steps, warmup))
    params = [p for p in model.collect_params().values() if p.grad_req != 'null']
    mlm_loss_fn, nsp_loss_fn = gluon.loss.SoftmaxCELoss(), gluon.loss.SigmoidBCELoss()
    settings = dict(run_settings or {}, num_steps=num_steps, lr=lr, warmup_ratio=warmup_ratio, clip=clip,
                    weight_decay=weight_decay, eval_every=eval_every, seed=seed, steps_per_epoch=steps_per_epoch)
    history: list[dict] = []
    step = 0
    state = start_run(model, trainer, checkpoint_dir, resume, settings, ctx)
    if state is not None:
        step, history = state['step'], state['history']

    bar = tqdm(total=num_steps, initial=step, desc='pretrain', disable=not show_progress(progress))
    running = {'mlm': 0.0, 'nsp': 0.0, 'n': 0}
    start = time.time()
    while step < num_steps:
        epoch = step // steps_per_epoch
        for batch in epoch_batches(train_data, seed, epoch, step - epoch * steps_per_epoch, before_epoch):
            seed_step(seed, step)
            batch = [x.as_in_context(ctx) for x in batch]
            with autograd.record():
                mlm_loss, nsp_loss, _, _ = _losses(model, batch, mlm_loss_fn, nsp_loss_fn)
                loss = mlm_loss + nsp_loss
            loss.backward()
            if clipped_update(trainer, params, clip, loss.asscalar(), f'step {step}', skip_nonfinite):
                running['mlm'] += mlm_loss.asscalar()
                running['nsp'] += nsp_loss.asscalar()
                running['n'] += 1
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == num_steps:
                k = max(running['n'], 1)
                record = {'step': step, 'train_mlm_loss': running['mlm'] / k, 'train_nsp_loss': running['nsp'] / k,
                          'seconds': time.time() - start,
                          **evaluate_pretraining(model, eval_data, ctx, baseline_token)}
                history.append(record)
                running = {'mlm': 0.0, 'nsp': 0.0, 'n': 0}
                log.info('step %d: train MLM loss %.3f, held-out MLM loss %.3f, MLM accuracy %.3f, NSP accuracy %.3f',
                         step, record['train_mlm_loss'], record['mlm_loss'], record['mlm_accuracy'],
                         record['nsp_accuracy'])
                if checkpoint_dir is not None:
                    save_checkpoint(checkpoint_dir, model, trainer, {'step': step, 'epoch': epoch, 'history': history,
                                                                     'seed': seed, 'settings': settings})
            if step >= num_steps:
                break
    bar.close()
    return history


def most_frequent_token(docs) -> int:
    """The commonest token id of tokenized documents: the MLM baseline always predicts it."""
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for d in docs for s in d]))
    return int(counts.argmax())


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on. Each field's metadata (``checks.option``) is the one source of its
    ``python -m bert_tutorial pretrain`` flag and help, its check and whether a resume compares it."""

    corpus: str = option('movie-reviews', "'movie-reviews' (built-in), 'wikitext-2', or a text file / folder of .txt "
                         'files')
    encoding: str = option('utf-8', 'the encoding of a corpus file or folder')
    vocab: str | None = option(None, 'a WordPiece vocab.txt (None: the words of the corpus)')
    vocab_size: int = option(20000, 'at most this many tokens (without --vocab)', rule=integer(6))
    min_freq: int = option(2, 'a word enters the vocabulary when it occurs at least this often (without --vocab)',
                           rule=integer(1))
    layers: int = option(2, 'transformer blocks', rule=integer(1))
    units: int = option(128, 'the width of the encodings', rule=integer(1))
    hidden: int = option(256, "the FFN's inner width (the tutorial's hidden_size)", rule=integer(1))
    heads: int = option(2, 'attention heads (dividing --units)', rule=integer(1))
    dropout: float = option(0.1, 'dropout inside the encoder', rule=fraction())
    max_len: int = option(48, f'tokens a sentence pair, [CLS] and [SEP] included (capped at {MAX_POSITIONS}, the '
                          "positions of BERT)", rule=integer(5))
    batch_size: int = option(64, 'sentence pairs a step', rule=integer(1))
    steps: int = option(1400, 'training steps', rule=integer(1))
    lr: float = option(1e-3, 'peak learning rate (after warm-up, then linear decay to 0)', rule=positive())
    eval_every: int = option(200, 'evaluate and checkpoint every N steps', rule=integer(1))
    ctx: str = option(default_ctx(), 'where to compute: the CPU, or the first GPU (needs a CUDA build of MXNet: see '
                      'the install page); the default is gpu when MXNet sees one', choices=('cpu', 'gpu'),
                      free='compute')
    fast: bool = option(True, "on a CPU, BERTAdam's update on the speed plug-in's FusedBERTAdam (the same values, "
                        "faster); --no-fast: GluonNLP's BERTAdam", free='compute')
    seed: int = option(0, 'seeds the split, the vocabulary, pairs, masks, weights', rule=integer(0, high=MAX_SEED))
    out: str = option('runs/pretrain', 'the output folder: the encoder, its config and vocabulary, metrics.json (and '
                      'checkpoints until the run finishes)', free='output')
    resume: bool = option(False, 'continue from the last checkpoint in --out (a finished run says so and exits 0)',
                          flags={'--resume': True}, free='output')
    keep_checkpoints: bool = option(False, 'keep --out/checkpoints when the run finishes (by default they are removed '
                                    'then: they exist to resume a run that stopped)',
                                    flags={'--keep-checkpoints': True}, free='output')
    progress: bool | None = option(None, 'no progress bar (by default one is drawn on terminals only)',
                                   flags={'--no-progress': False}, free='output')

    def run_settings(self) -> dict:
        """The settings a checkpoint of this run depends on: all but those a resume may change (``free``: where it
        writes, how it reports and computes); and the sha256 of the files it reads (a corpus file or folder, a
        vocabulary: ``data_sha256``)."""
        settings = compared_settings(self)
        corpus = None if self.corpus in ('movie-reviews', 'wikitext-2') else self.corpus  # built in: verified assets
        settings[DATA_KEY] = data_digests({'corpus': corpus, 'vocab': self.vocab})
        return settings

    def check(self) -> None:
        """``ValueError`` naming the first setting out of its range, and what the range is."""
        check_fields(self)
        if self.units % self.heads:
            raise ValueError(f'{setting("units")} ({self.units}) must be divisible by {setting("heads")} '
                             f'({self.heads})')


class PretrainResult(RunResult):
    """What ``pretrain`` returns (``RunResult``): ``model`` is the ``BERTPretrainModel``, ``history`` one record per
    evaluation; the encoder is saved in ``out``."""

    def result_line(self) -> str:
        """The held-out MLM accuracy against always guessing the most frequent token, the NSP accuracy, the time and
        where the encoder is."""
        m = self.metrics
        return (f"held-out MLM accuracy {m['mlm_accuracy']:.3f} (always '{m['baseline_token']}': "
                f"{m['mlm_baseline_accuracy']:.3f}), NSP accuracy {m['nsp_accuracy']:.3f}, {m['seconds']:.0f} s; "
                f"encoder saved in {self.out} (fine-tune it: finetune --model {self.out})")


def load_corpus(corpus: str, encoding: str = 'utf-8') -> list[list[str]]:
    """Documents (lists of sentences) of ``'movie-reviews'``, ``'wikitext-2'`` or a text file / folder."""
    if corpus == 'movie-reviews':
        return movie_review_documents()
    if corpus == 'wikitext-2':
        return load_wikitext2()
    return read_text_corpus(corpus, encoding)


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Pre-train a small BERT as ``config`` says; writes the encoder folder (``save_model``, model type
    ``'encoder'``), ``metrics.json`` and checkpoints into ``config.out``."""
    config.check()
    check_out_folder(config.out, (config.corpus,))
    if config.max_len > MAX_POSITIONS:  # as finetune caps it at its model's positions; memory grows with max_len
        log.warning('max_len %d is more than BERT has positions for: using %d', config.max_len, MAX_POSITIONS)
        config = dataclasses.replace(config, max_len=MAX_POSITIONS)
    ctx = contexts(config.ctx)[0]  # no GPU for ctx='gpu': one clear error before anything is written
    with locked_output(config.out) as out:
        return _pretrain(config, out, ctx)


def _pretrain(config: PretrainConfig, out: Path, ctx: mx.Context) -> PretrainResult:
    check_run_folder(out, ('model.params', 'config.json', 'vocab.json', 'metrics.json'), ('checkpoints',))
    settings = config.run_settings()  # once: the data digests recorded are of the files as this run found them
    finished = check_run_dir(out, config.resume, settings)  # before anything loads
    if finished is not None:
        log.info('%s holds a finished run (metrics.json): nothing to resume', out)
        return PretrainResult(None, None, finished['history'], finished, out, finished_before=True)
    seed_everything(config.seed)
    started = time.time()
    documents = load_corpus(config.corpus, config.encoding)
    if config.vocab:
        vocab = load_vocabulary(config.vocab)
    else:
        vocab = build_vocab(nlp.data.BERTBasicTokenizer(lower=True), documents, min_freq=config.min_freq,
                            max_size=config.vocab_size)
    tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
    train_docs, eval_docs = split_documents(tokenize_documents(tokenizer, vocab, documents), 0.1, config.seed)
    train_set = PretrainingDataset(train_docs, vocab, config.max_len, seed=config.seed)
    eval_set = PretrainingDataset(eval_docs, vocab, config.max_len, seed=config.seed + 1)
    log.info('%d documents, vocabulary of %d, %d training and %d held-out pairs', len(documents), len(vocab),
             len(train_set), len(eval_set))
    model = BERTPretrainModel(len(vocab), config.units, config.hidden, config.heads, config.layers, config.dropout,
                              max_len=config.max_len)
    model.initialize(mx.init.Normal(0.02), ctx=ctx)
    # The kernels' layers were not measured at these sizes: the plug-in's optimizer alone, MXNet's dropout masks.
    acceleration = accelerate(model, ctx, dropout=False, layer_norm=False, ops=False) if config.fast else None
    model.hybridize(static_alloc=True, static_shape=True)
    check_free_space(out, model.collect_params(), 'pre-training')  # before training
    baseline = most_frequent_token(train_docs)
    history = pretrain_loop(model, pretraining_loader(train_set, config.batch_size, shuffle=True, drop_last=True),
                            pretraining_loader(eval_set, config.batch_size, shuffle=False), config.steps, config.lr,
                            ctx, checkpoint_dir=out, resume=config.resume, seed=config.seed, baseline_token=baseline,
                            eval_every=config.eval_every, progress=config.progress, before_epoch=train_set.resample,
                            run_settings=settings,
                            optimizer=acceleration.optimizer if acceleration else 'bertadam')
    encoder = model.to_encoder()
    save_model(out, encoder, vocab, {'model_type': 'encoder', 'encoder': encoder.config})
    final = history[-1]
    metrics = {k: final[k] for k in ('mlm_loss', 'mlm_accuracy', 'nsp_accuracy', 'mlm_baseline_accuracy')}
    metrics.update(baseline_token=vocab.idx_to_token[baseline], seconds=time.time() - started,
                   vocab_size=len(vocab), num_train_pairs=len(train_set), num_eval_pairs=len(eval_set),
                   model=model.config, config=dataclasses.asdict(config), history=history,
                   measured=measured(), kernel_choice=acceleration.choice if acceleration else None)
    # metrics.json, written last, marks the run finished (resume then has nothing to do); the checkpoints go after it.
    write_atomic(out / 'metrics.json', json.dumps(metrics, indent=2))
    if not config.keep_checkpoints:
        remove_checkpoints(out)
    return PretrainResult(model, vocab, history, metrics, out)
