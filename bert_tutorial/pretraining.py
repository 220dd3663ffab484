"""BERT pre-training with the tutorial's blocks: ``BERTEncoder`` + ``MLMDecoder`` + ``NSClassifier``.

``BERTPretrainModel`` joins them; ``pretrain_loop`` trains masked-LM and next-sentence prediction together;
``PretrainedEncoder`` hands the encoder to fine-tuning in the shape the tutorial's ``BERTClassifier`` expects.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .checkpoint import epoch_seed, save_checkpoint, seed_everything
from .checkpoint import resume as resume_from
from .checks import check_batch_positions, is_concrete
from .model import BERTEncoder, MLMDecoder, NSClassifier
from .training import clipped_update, lr_schedule, make_trainer
from .transformer import valid_length_mask

log = logging.getLogger(__name__)

CONFIG_FILE = 'pretrain_config.json'
# 2: the tutorial's encoder (learned positions). Folders without it were written by an encoder with sinusoidal
# positions and scaled word embeddings, whose parameters do not fit the tutorial's encoder.
FORMAT_VERSION = 2


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
                           num_layers=num_layers, dropout=dropout, max_len=max_len, tie_weights=tie_weights,
                           format_version=FORMAT_VERSION)
        self.encoder = BERTEncoder(vocab_size, units, hidden_size, num_heads, num_layers, dropout, max_len=max_len)
        self.mlm = MLMDecoder(vocab_size, units,
                              embed_params=self.encoder.word_embed.params if tie_weights else None)
        self.nsp = NSClassifier(units)

    def forward(self, words, segments, valid_len, masked_positions):
        if is_concrete(masked_positions):
            check_batch_positions(masked_positions, words.shape[0], words.shape[1], 'masked_positions')
        return super().forward(words, segments, valid_len, masked_positions)

    def hybrid_forward(self, F, words, segments, valid_len, masked_positions):
        X = self.encoder(words, segments, valid_length_mask(F, valid_len, words))
        # (batch_size, num_pred) positions -> gather_nd indices (2, batch_size * num_pred)
        batch_idx = F.broadcast_like(F.contrib.arange_like(masked_positions, axis=0).reshape((-1, 1)),
                                     masked_positions)
        idx = F.stack(batch_idx.reshape((-1,)), masked_positions.reshape((-1,)), axis=0)
        mlm_scores = self.mlm(X, idx)
        mlm_scores = F.reshape_like(mlm_scores, masked_positions, lhs_begin=0, lhs_end=1, rhs_begin=0, rhs_end=2)
        return X, mlm_scores, self.nsp(X)


class PretrainedEncoder(gluon.HybridBlock):
    """A pre-trained ``BERTEncoder`` plus a pooler (the NSP head's tanh layer on ``[CLS]``), called like GluonNLP's
    ``BERTModel``: ``(inputs, segments, valid_len)`` -> ``(seq_encoding, pooled)``, so that
    ``BERTClassifier(PretrainedEncoder(...), 2)`` fine-tunes it."""

    def __init__(self, config: dict, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(config)
        c = self.config
        self.encoder = BERTEncoder(c['vocab_size'], c['units'], c['hidden_size'], c['num_heads'], c['num_layers'],
                                   c['dropout'], max_len=c['max_len'])
        self.pooler = gluon.nn.Dense(c['units'], flatten=False, activation='tanh', in_units=c['units'])
        self.units = c['units']

    @property
    def word_embed(self):
        return self.encoder.word_embed

    def describe(self) -> dict:
        return dict(self.config, model_type='tutorial')

    def hybrid_forward(self, F, inputs, segments, valid_len):
        X = self.encoder(inputs, segments, valid_length_mask(F, valid_len, inputs))
        return X, self.pooler(F.slice_axis(X, axis=1, begin=0, end=1).reshape((0, -1)))


def build_pretrained_encoder(config: dict, ctx=None) -> PretrainedEncoder:
    """An initialized ``PretrainedEncoder`` of ``config``'s sizes (weights to be loaded)."""
    if config.get('format_version') != FORMAT_VERSION:
        raise ValueError('this pre-trained encoder was written by an older bert_tutorial whose encoder used '
                         'sinusoidal positions and scaled word embeddings; its weights do not fit the tutorial\'s '
                         'BERTEncoder (learned positions). Pre-train it again: python -m bert_tutorial pretrain')
    block = PretrainedEncoder({k: v for k, v in config.items() if k != 'model_type'})
    block.initialize(ctx=ctx or mx.cpu())
    return block


def save_pretrained(model: BERTPretrainModel, vocab, out_dir: str | os.PathLike) -> Path:
    """``encoder.params`` (encoder + pooler), ``vocab.json`` and ``pretrain_config.json`` for fine-tuning."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The file save_parameters would write for a PretrainedEncoder: the encoder, and the NSP tanh layer as pooler.
    arrays = {f'encoder.{name}': p.data(p.list_ctx()[0]).copyto(mx.cpu())
              for name, p in model.encoder._collect_params_with_prefix().items()}
    dense = model.nsp.classifier[0]
    arrays.update({'pooler.weight': dense.weight.data(dense.weight.list_ctx()[0]).copyto(mx.cpu()),
                   'pooler.bias': dense.bias.data(dense.bias.list_ctx()[0]).copyto(mx.cpu())})
    mx.nd.save(str(out / 'encoder.params'), arrays)
    (out / 'vocab.json').write_text(vocab.to_json())
    (out / CONFIG_FILE).write_text(json.dumps(model.config, indent=2))
    return out


def load_pretrained_encoder(out_dir: str | os.PathLike, ctx=None):
    """``(PretrainedEncoder, BERTVocab)`` from a ``pretrain`` output folder."""
    import gluonnlp as nlp

    out = Path(out_dir)
    missing = [f for f in (CONFIG_FILE, 'encoder.params', 'vocab.json') if not (out / f).is_file()]
    if missing:
        raise FileNotFoundError(f'{out} is not a complete pretrain output: {", ".join(missing)} missing '
                                '(run python -m bert_tutorial pretrain --out DIR)')
    block = build_pretrained_encoder(json.loads((out / CONFIG_FILE).read_text()), ctx=ctx)
    block.load_parameters(str(out / 'encoder.params'), ctx=ctx or mx.cpu())
    return block, nlp.vocab.BERTVocab.from_json((out / 'vocab.json').read_text())


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
                  seed: int = 0, baseline_token: int | None = None, progress: bool = True,
                  skip_nonfinite: bool = False) -> list[dict]:
    """Train masked LM + next-sentence prediction for ``num_steps`` steps; returns the evaluation history.

    ``train_data``: a ``DataLoader`` over a ``PretrainingDataset`` (its masks are re-drawn every epoch from
    ``(seed, epoch)``). Every epoch (or ``eval_every`` steps) it logs MLM loss/accuracy and NSP accuracy on
    ``eval_data`` and writes a checkpoint to ``checkpoint_dir``; ``resume=True`` continues from the newest.
    """
    from tqdm.auto import tqdm

    if num_steps < 1 or lr <= 0:
        raise ValueError(f'num_steps must be >= 1 and lr > 0, got {num_steps} and {lr}')
    steps_per_epoch = len(train_data)
    if steps_per_epoch == 0:
        raise ValueError('train_data is empty')
    eval_every = eval_every or steps_per_epoch
    warmup = max(1, int(warmup_ratio * num_steps))
    trainer = make_trainer(model, lr, 'bertadam', weight_decay, no_decay_norm_bias=True,
                           lr_scheduler=lr_schedule(lr, num_steps, warmup))
    params = {k: p for k, p in model.collect_params().items() if p.grad_req != 'null'}
    mlm_loss_fn, nsp_loss_fn = gluon.loss.SoftmaxCELoss(), gluon.loss.SigmoidBCELoss()
    history: list[dict] = []
    step = 0
    state = resume_from(checkpoint_dir, model, trainer, ctx=ctx) if resume else None
    if state is not None:
        step, history = state['step'], state['history']

    bar = tqdm(total=num_steps, initial=step, desc='pretrain', disable=not progress)
    running = {'mlm': 0.0, 'nsp': 0.0, 'n': 0}
    start = time.time()
    while step < num_steps:
        epoch = step // steps_per_epoch
        seed_everything(epoch_seed(seed, epoch))
        if hasattr(train_data._dataset, 'resample'):
            train_data._dataset.resample(epoch_seed(seed, epoch))
        batches = iter(train_data)
        for _ in range(step - epoch * steps_per_epoch):  # resuming inside an epoch
            next(batches)
        for batch in batches:
            mx.random.seed(epoch_seed(seed, 10_000_019 + step))
            batch = [x.as_in_context(ctx) for x in batch]
            with autograd.record():
                mlm_loss, nsp_loss, _, _ = _losses(model, batch, mlm_loss_fn, nsp_loss_fn)
                loss = mlm_loss + nsp_loss
            loss.backward()
            value = loss.asscalar()
            trainer.allreduce_grads()
            if clipped_update(trainer, list(params.values()), clip, value, f'step {step}', skip_nonfinite):
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
                bar.write(f"step {step}: train MLM loss {record['train_mlm_loss']:.3f}, held-out MLM loss "
                          f"{record['mlm_loss']:.3f}, MLM accuracy {record['mlm_accuracy']:.3f}, "
                          f"NSP accuracy {record['nsp_accuracy']:.3f}")
                if checkpoint_dir is not None:
                    save_checkpoint(checkpoint_dir, model, trainer, {'step': step, 'epoch': epoch,
                                                                     'history': history, 'seed': seed})
            if step >= num_steps:
                break
    bar.close()
    return history


def most_frequent_token(docs) -> int:
    """The commonest token id of tokenized documents: the MLM baseline always predicts it."""
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for d in docs for s in d]))
    return int(counts.argmax())
