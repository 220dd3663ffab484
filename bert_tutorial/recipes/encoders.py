"""The BERT encoders the package fine-tunes, behind one contract.

Every encoder here is called like GluonNLP's ``BERTModel``: ``(token_ids, segment_ids, valid_length)`` ->
``seq_encoding`` ``(batch_size, seq_len, units)``, or ``(seq_encoding, pooled)`` with a pooler, and exposes

- ``config``: a dict with ``model_type`` (``'gluonnlp_bert'`` or ``'tutorial_bert'``) and the sizes under the
  tutorial's names: ``vocab_size``, ``units`` (the width of the encodings: Hugging Face's ``hidden_size``),
  ``hidden_size`` (the FFN's inner width: Hugging Face's ``intermediate_size``), ``num_heads``, ``num_layers``,
  ``max_len`` (position embeddings), ``dropout``; GluonNLP BERTs add ``type_vocab_size`` and ``layer_norm_eps``.
  ``build_encoder(config)`` builds the same encoder again (weights to be loaded).
- ``word_embedding``: the word ``Embedding`` block (to freeze it, or to tie an output layer to it).

This module reads no files: loading weights is ``hub``'s work.
"""
from __future__ import annotations

import gluonnlp as nlp
import mxnet as mx
from mxnet import gluon

from ..tutorial.model import BERTEncoder
from ..tutorial.transformer import first_token, valid_length_mask

MODEL_TYPES = ('gluonnlp_bert', 'tutorial_bert')
SIZES = ('vocab_size', 'units', 'hidden_size', 'num_heads', 'num_layers', 'max_len', 'dropout')


def _check_config(config: dict, required: tuple[str, ...]) -> None:
    if config.get('model_type') not in MODEL_TYPES:
        raise ValueError(f"config['model_type'] must be one of {MODEL_TYPES}, got {config.get('model_type')!r}")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f'config of a {config["model_type"]} lacks {missing} (needs {list(required)})')


class GluonBERT(nlp.model.BERTModel):
    """GluonNLP's ``BERTModel`` (what the tutorial's ``nlp.model.get_model`` returns: no decoder, no classifier),
    built from a ``config``. Its children and parameter names are ``BERTModel``'s."""

    def __init__(self, config: dict, use_pooler: bool = True, **kwargs):
        _check_config(config, SIZES + ('type_vocab_size', 'layer_norm_eps'))
        c = self.config = dict(config)
        encoder = nlp.model.BERTEncoder(num_layers=c['num_layers'], units=c['units'], hidden_size=c['hidden_size'],
                                        max_length=c['max_len'], num_heads=c['num_heads'], dropout=c['dropout'],
                                        layer_norm_eps=c['layer_norm_eps'])
        super().__init__(encoder, vocab_size=c['vocab_size'], token_type_vocab_size=c['type_vocab_size'],
                         units=c['units'], embed_size=c['units'], use_pooler=use_pooler, use_decoder=False,
                         use_classifier=False, **kwargs)

    @property
    def word_embedding(self) -> gluon.nn.Embedding:
        return self.word_embed[0]


def gluon_bert_config(model: nlp.model.BERTModel, dropout: float | None = None) -> dict:
    """The ``config`` of any GluonNLP ``BERTModel`` (e.g. one that ``nlp.model.get_model`` built)."""
    enc = model.encoder
    return {
        'model_type': 'gluonnlp_bert', 'vocab_size': model.word_embed[0].weight.shape[0], 'units': enc._units,
        'hidden_size': enc.transformer_cells[0].ffn.ffn_1.weight.shape[0],
        'num_heads': enc.transformer_cells[0].attention_cell._num_heads, 'num_layers': len(enc.transformer_cells),
        'max_len': enc._max_length, 'dropout': enc._dropout if dropout is None else dropout,
        'type_vocab_size': model.token_type_embed[0].weight.shape[0], 'layer_norm_eps': enc._layer_norm_eps,
    }


class TutorialBERT(gluon.HybridBlock):
    """The tutorial's ``BERTEncoder`` with a pooler (a tanh ``Dense`` on ``[CLS]``, as BERT's), called like GluonNLP's
    ``BERTModel``. Pre-training hands its encoder and its next-sentence layer (as the pooler) over in this shape.

    ``encoder``/``pooler``: existing blocks to use (their parameters are shared), else new ones of ``config``'s sizes.
    """

    def __init__(self, config: dict, use_pooler: bool = True, encoder: BERTEncoder | None = None,
                 pooler: gluon.nn.Dense | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_config(config, SIZES)
        c = self.config = {k: config[k] for k in ('model_type',) + SIZES}
        self.encoder = encoder or BERTEncoder(c['vocab_size'], c['units'], c['hidden_size'], c['num_heads'],
                                              c['num_layers'], c['dropout'], max_len=c['max_len'])
        self.pooler = None
        if use_pooler:
            self.pooler = pooler or gluon.nn.Dense(c['units'], flatten=False, activation='tanh', in_units=c['units'])

    @property
    def word_embedding(self) -> gluon.nn.Embedding:
        return self.encoder.word_embed

    def hybrid_forward(self, F, inputs, segments, valid_len):
        X = self.encoder(inputs, segments, valid_length_mask(F, valid_len, inputs))
        if self.pooler is None:
            return X
        return X, self.pooler(first_token(F, X))


def build_encoder(config: dict, use_pooler: bool = True, ctx=None) -> GluonBERT | TutorialBERT:
    """An initialized encoder of ``config`` (random weights, every parameter's shape known)."""
    ctx = ctx or mx.cpu()
    if config.get('model_type') == 'gluonnlp_bert':
        model = GluonBERT(config, use_pooler=use_pooler)
    else:
        model = TutorialBERT(config, use_pooler=use_pooler)
    model.initialize(ctx=ctx)
    # Some parameters are created lazily: one forward pass gives them their shapes.
    model(mx.nd.ones((1, 2), ctx=ctx), mx.nd.zeros((1, 2), ctx=ctx), mx.nd.array([2], ctx=ctx))
    return model
