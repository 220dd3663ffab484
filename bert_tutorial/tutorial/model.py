"""The tutorial's BERT classes: the encoder with segment embeddings and its three heads."""
from __future__ import annotations

import gluonnlp as nlp
from mxnet import gluon

from ..checks import (
    as_float_input,
    check_gather_positions,
    check_segments,
    check_token_ids,
    check_valid_len,
    is_concrete,
)
from .transformer import EncoderBlock, MaskedBlock, PositionalEncoding, first_token, valid_length_mask


class BERTEncoder(MaskedBlock):
    """Word + segment embeddings, a learned position embedding, then ``num_layers`` encoder blocks.

    ``words``, ``segments``: ``(batch_size, seq_len)``, segments in {0, 1}, ``seq_len <= max_len``;
    ``mask``: ``None``, the tutorial's ``(batch_size, seq_len, seq_len)`` 0/1 matrix, or valid lengths
    ``(batch_size,)`` (see ``transformer``). Output: ``(batch_size, seq_len, units)``.
    """

    def __init__(self, vocab_size: int, units: int, hidden_size: int, num_heads: int, num_layers: int,
                 dropout: float, max_len: int = 1000, **kwargs):
        super().__init__(**kwargs)
        if units % num_heads:
            raise ValueError(f'units must be divisible by num_heads: got units={units}, num_heads={num_heads}')
        self.vocab_size = vocab_size
        self.units = units
        self.max_len = max_len
        # segment_embed for segment information
        self.segment_embed = gluon.nn.Embedding(2, units)
        self.word_embed = gluon.nn.Embedding(vocab_size, units)
        self.pos_encoding = PositionalEncoding(units, dropout, max_len)
        self.blks = gluon.nn.HybridSequential()
        for _ in range(num_layers):
            self.blks.add(EncoderBlock(units, hidden_size, num_heads, dropout))

    def forward(self, words, segments, mask=None):
        words, segments = as_float_input(words, 'words'), as_float_input(segments, 'segments')
        if is_concrete(words):
            check_token_ids(words, self.vocab_size, 'words')
            check_segments(segments, words.shape, 'segments')
            if words.shape[1] > self.max_len:
                raise ValueError(f'words has {words.shape[1]} positions, more than max_len={self.max_len}')
        mask = self._matrix_mask(mask, words, words)
        return super().forward(words, segments) if mask is None else super().forward(words, segments, mask)

    def hybrid_forward(self, F, words, segments, mask=None):
        X = self.word_embed(words) + self.segment_embed(segments)
        X = self.pos_encoding(X)
        for blk in self.blks:
            X = blk(X, mask)
        return X


class NSClassifier(gluon.HybridBlock):
    """Next-sentence prediction from the first token's encoding.

    Input ``(batch_size, seq_len, units)``; output scores ``(batch_size, 1)`` (1 = true next sentence).
    """

    def __init__(self, units: int = 768, **kwargs):
        super().__init__(**kwargs)
        self.classifier = gluon.nn.HybridSequential()
        self.classifier.add(gluon.nn.Dense(units=units, flatten=False, activation='tanh'))
        # binary classification layer
        self.classifier.add(gluon.nn.Dense(units=1, flatten=False))

    def forward(self, X):
        if is_concrete(X) and X.ndim != 3:
            raise ValueError(f'X must have shape (batch_size, seq_len, units), got {X.shape}')
        return super().forward(X)

    def hybrid_forward(self, F, X):
        return self.classifier(first_token(F, X))


class MLMDecoder(gluon.HybridBlock):
    """Masked-LM head: gather the encodings at the masked positions, then score every word.

    ``X``: ``(batch_size, seq_len, units)``; ``masked_positions``: ``(2, num_masked)`` in ``gather_nd`` layout
    (row 0 batch indices, row 1 token positions). Output: ``(num_masked, vocab_size)``.
    ``embed_params``: a word embedding's parameters, to tie the output layer's weight to them.
    """

    def __init__(self, vocab_size: int, units: int, embed_params=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.decoder = gluon.nn.HybridSequential()
        self.decoder.add(gluon.nn.Dense(units, flatten=False, in_units=units))
        # Gaussian Error Linear Units as the activation function
        self.decoder.add(gluon.nn.GELU())
        self.decoder.add(gluon.nn.LayerNorm(in_channels=units))
        # classification layer for `vocab_size` classes; with `embed_params` (the word embedding's
        # ParameterDict) its weight is the embedding matrix, as in BERT
        self.decoder.add(gluon.nn.Dense(vocab_size, flatten=False, in_units=units, params=embed_params))

    def forward(self, X, masked_positions):
        if is_concrete(X):
            if X.ndim != 3:
                raise ValueError(f'X must have shape (batch_size, seq_len, units), got {X.shape}')
            check_gather_positions(masked_positions, X.shape[0], X.shape[1], 'masked_positions')
        return super().forward(X, masked_positions)

    def hybrid_forward(self, F, X, masked_positions):
        X = F.gather_nd(X, masked_positions.astype('int32'))
        return self.decoder(X)


def _encoder_sizes(bert) -> tuple[int | None, int, int | None]:
    """``(vocab_size, units, max_len)`` of ``bert``: an encoder of ``bert_tutorial.encoders`` (its ``config``), the
    tutorial's ``BERTEncoder``, or any GluonNLP ``BERTModel`` (the tutorial's ``get_model`` result)."""
    config = getattr(bert, 'config', None)
    if isinstance(config, dict) and 'units' in config:
        return config['vocab_size'], config['units'], config['max_len']
    if isinstance(bert, BERTEncoder):
        return bert.vocab_size, bert.units, bert.max_len
    if isinstance(bert, nlp.model.BERTModel):
        return bert.word_embed[0].weight.shape[0], bert.encoder._units, bert.encoder._max_length
    return None, 0, None


class BERTClassifier(gluon.HybridBlock):
    """A dense layer on BERT's pooled ``[CLS]`` encoding.

    ``bert`` returns ``(seq_encoding, cls_encoding)`` (GluonNLP's ``BERTModel`` with the pooler) or only the
    sequence encoding (``BERTEncoder``, or an encoder built without a pooler; the first token's encoding is then
    used). Inputs: ``(batch_size, seq_len)`` ids and segments, ``(batch_size,)`` valid lengths.
    Output: ``(batch_size, num_classes)`` scores.
    ``pooling='mean'`` averages the sequence encoding over the valid positions instead: the tutorial uses
    ``'cls'``, but checkpoints trained as sentence encoders (all-MiniLM-L6-v2) were trained with mean pooling (build
    their encoder with ``use_pooler=False``: no unused pooler). ``dropout`` before the output layer: the tutorial
    has none (0), GluonNLP's fine-tuning script 0.1.
    """

    def __init__(self, bert, num_classes: int, dropout: float = 0.0, pooling: str = 'cls', **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be an integer >= 1, got {num_classes!r}')
        if pooling not in ('cls', 'mean'):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {dropout}')
        self.pooling = pooling
        self.bert = bert
        if pooling == 'mean' and getattr(bert, 'pooler', None) is not None:
            # An unused pooler gets no gradient: the trainer must not wait for one.
            bert.pooler.collect_params().setattr('grad_req', 'null')
        self.vocab_size, units, self.max_len = _encoder_sizes(bert)
        self.dropout = gluon.nn.Dropout(dropout) if dropout else None
        # extra layer used for classification; a known input size means no deferred initialization
        self.classifier = gluon.nn.Dense(num_classes, in_units=units)

    def forward(self, inputs, segment_types, seq_len):
        inputs, segment_types, seq_len = (as_float_input(x, name) for x, name in (
            (inputs, 'inputs'), (segment_types, 'segment_types'), (seq_len, 'seq_len')))
        if is_concrete(inputs):
            if self.vocab_size is not None:
                check_token_ids(inputs, self.vocab_size, 'inputs')
            check_segments(segment_types, inputs.shape, 'segment_types')
            check_valid_len(seq_len, inputs.shape[0], inputs.shape[1], 'seq_len')
            if self.max_len is not None and inputs.shape[1] > self.max_len:
                # GluonNLP's position embedding would read its last row for every position past the end
                raise ValueError(f'inputs has {inputs.shape[1]} positions, more than the {self.max_len} that bert has '
                                 'position embeddings for: cut the text (max_len of the transform)')
        return super().forward(inputs, segment_types, seq_len)

    def hybrid_forward(self, F, inputs, segment_types, seq_len):
        # the tutorial's BERTEncoder takes an attention mask; BERT models called like GluonNLP's take lengths
        mask = valid_length_mask(F, seq_len, inputs) if isinstance(self.bert, BERTEncoder) else seq_len
        out = self.bert(inputs, segment_types, mask)
        seq_encoding = out[0] if isinstance(out, (list, tuple)) else out
        if self.pooling == 'mean':
            masked = F.SequenceMask(seq_encoding, sequence_length=seq_len, use_sequence_length=True, axis=1)
            cls_encoding = F.broadcast_div(masked.sum(axis=1), seq_len.reshape((-1, 1)))
        elif isinstance(out, (list, tuple)):
            cls_encoding = out[1]
        else:
            cls_encoding = first_token(F, seq_encoding)
        if self.dropout is not None:
            cls_encoding = self.dropout(cls_encoding)
        return self.classifier(cls_encoding)
