"""The transformer blocks the tutorial imports from ``utils`` (chapter ``07_bert_app`` of the KDD 2019 tutorial).

The same constructor arguments, children and computation as the tutorial's blocks, so that its parameter files load
unchanged: a learned position embedding, attention without an output projection, GELU in the FFN, ``LayerNorm()``
with its default epsilon. They are ``HybridBlock``s; the tutorial's were imperative ``Block``s.

Attention masks come in two forms:

- the tutorial's ``(batch_size, num_queries, num_keys)`` matrix, 1 where a query may attend to a key;
- valid lengths ``(batch_size,)`` (GluonNLP's convention): the first ``valid_len[b]`` keys of example ``b``.

Called with ``NDArray``s, a block tells the two apart by rank and turns lengths into the matrix
(``valid_length_mask``) before its graph runs, so a hybridized graph always takes the matrix (or ``None``).
Inside a hybridized parent's graph the rank is unknown: the parent passes the matrix, built in its graph with
``valid_length_mask(F, valid_len, words)``, as the package's ``BERTClassifier`` and pre-training model do.
"""
from __future__ import annotations

from mxnet import gluon, nd

from ..checks import check_attention_mask, check_valid_len, is_concrete

# What GluonNLP's masked softmax writes over masked scores (before multiplying the weights by the mask).
MASKED_SCORE = -1e18


def valid_length_mask(F, valid_len, like):
    """``(batch_size, seq_len, seq_len)`` 0/1 self-attention mask from valid lengths ``(batch_size,)``.

    ``like``: any ``(batch_size, seq_len, ...)`` array of the sequence (token ids or encodings).
    """
    steps = F.contrib.arange_like(like, axis=1).reshape((1, 1, -1))                    # (1, 1, seq_len)
    keys = F.broadcast_lesser(steps, valid_len.astype('float32').reshape((-1, 1, 1)))  # (batch_size, 1, seq_len)
    return F.broadcast_like(keys, steps.reshape((1, -1, 1)), lhs_axes=(1,), rhs_axes=(1,))


def first_token(F, X):
    """The encoding of each sequence's first token (``[CLS]``): ``(batch_size, seq_len, units)`` ->
    ``(batch_size, units)``."""
    return F.slice_axis(X, axis=1, begin=0, end=1).reshape((0, -1))


def masked_softmax(F, scores, mask=None):
    """Softmax over the last axis ignoring masked keys, as GluonNLP's attention cells compute it: masked scores are
    replaced by a very negative number and the weights multiplied by the mask (a fully masked row gives zeros)."""
    if mask is None:
        return F.softmax(scores, axis=-1)
    scores = F.where(mask, scores, F.ones_like(scores) * MASKED_SCORE)
    return F.softmax(scores, axis=-1) * mask


class MaskedBlock(gluon.HybridBlock):
    """A block whose last input is an attention mask in either form (see the module docstring)."""

    _graph_has_mask: bool | None = None

    def _matrix_mask(self, mask, queries, keys):
        """The mask as the graph takes it; rebuilds a hybridized graph built for the other of mask/``None``."""
        if mask is not None and is_concrete(mask):
            batch_size, num_queries, num_keys = queries.shape[0], queries.shape[1], keys.shape[1]
            if mask.ndim == 1:
                check_valid_len(mask, batch_size, num_keys, 'mask')
                mask = valid_length_mask(nd, mask, keys)
                if num_queries != num_keys:
                    mask = nd.broadcast_axis(nd.slice_axis(mask, axis=1, begin=0, end=1), axis=1, size=num_queries)
            else:
                check_attention_mask(mask, (batch_size, num_queries, num_keys), 'mask')
                mask = mask.astype('float32', copy=False)  # 0/1 in any type; the graph computes in float32
        if is_concrete(queries) and self._graph_has_mask is not (mask is not None):
            if self._graph_has_mask is not None:
                self._clear_cached_op()
            self._graph_has_mask = mask is not None
        return mask


class DotProductAttention(gluon.HybridBlock):
    """Scaled dot-product attention with dropout on the attention weights.

    ``query``: ``(batch_size, num_queries, d)``; ``key``: ``(batch_size, num_keys, d)``;
    ``value``: ``(batch_size, num_keys, dim_v)``; ``mask``: ``None`` or ``(batch_size, num_queries, num_keys)``.
    Output: ``(batch_size, num_queries, dim_v)``.
    """

    def __init__(self, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout = gluon.nn.Dropout(dropout)

    def hybrid_forward(self, F, query, key, value, mask=None):
        # div_sqrt_dim: query / sqrt(query.shape[-1]), which a symbol cannot read
        scores = F.batch_dot(F.contrib.div_sqrt_dim(query), key, transpose_b=True)
        return F.batch_dot(self.dropout(masked_softmax(F, scores, mask)), value)


class PositionalEncoding(gluon.HybridBlock):
    """A learned position embedding added to the input, then dropout.

    Input and output: ``(batch_size, seq_len, units)`` with ``seq_len <= max_len``.
    """

    def __init__(self, units: int, dropout: float = 0, max_len: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self._max_len = max_len
        self._units = units
        self.embed = gluon.nn.Embedding(max_len, units)
        self.dropout = gluon.nn.Dropout(dropout)

    def forward(self, X, *args):
        if is_concrete(X) and X.shape[1] > self._max_len:
            raise ValueError(f'X has {X.shape[1]} positions, more than max_len={self._max_len}')
        return super().forward(X, *args)

    def hybrid_forward(self, F, X):
        positions = F.contrib.arange_like(X, axis=1).expand_dims(0)  # (1, seq_len)
        return self.dropout(F.broadcast_add(X, self.embed(positions)))


def transpose_qkv(X, num_heads: int):
    """``(batch_size, num_items, num_heads * p)`` -> ``(batch_size * num_heads, num_items, p)``."""
    X = X.reshape((0, 0, num_heads, -1)).transpose((0, 2, 1, 3))
    return X.reshape((-1, 0, 0), reverse=True)


def transpose_output(X, num_heads: int):
    """The inverse of ``transpose_qkv``."""
    X = X.reshape((-1, num_heads, 0, 0), reverse=True).transpose((0, 2, 1, 3))
    return X.reshape((0, 0, -1))


class MultiHeadAttention(MaskedBlock):
    """Multi-head attention: query, key and value projections (no bias), then dot-product attention per head.

    There is no output projection (the tutorial has none). ``query``: ``(batch_size, num_queries, units_in)``;
    ``key``/``value``: ``(batch_size, num_keys, units_in)``; ``mask``: ``None``, ``(batch_size, num_queries,
    num_keys)`` or valid lengths ``(batch_size,)``. Output: ``(batch_size, num_queries, units)``.
    """

    def __init__(self, units: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_heads, int) or num_heads < 1 or units % num_heads:
            raise ValueError(f'units must be divisible by num_heads: got units={units}, num_heads={num_heads}')
        self.num_heads = num_heads
        self.attention = DotProductAttention(dropout)
        self.W_q = gluon.nn.Dense(units, use_bias=False, flatten=False)
        self.W_k = gluon.nn.Dense(units, use_bias=False, flatten=False)
        self.W_v = gluon.nn.Dense(units, use_bias=False, flatten=False)

    def forward(self, query, key, value, mask=None):
        mask = self._matrix_mask(mask, query, key)
        return super().forward(query, key, value) if mask is None else super().forward(query, key, value, mask)

    def hybrid_forward(self, F, query, key, value, mask=None):
        query, key, value = (transpose_qkv(X, self.num_heads) for X in (self.W_q(query), self.W_k(key),
                                                                         self.W_v(value)))
        if mask is not None:
            # the same mask for every head: (batch_size * num_heads, num_queries, num_keys)
            mask = F.broadcast_axis(F.expand_dims(mask, axis=1), axis=1, size=self.num_heads)
            mask = mask.reshape((-1, 0, 0), reverse=True)
        return transpose_output(self.attention(query, key, value, mask), self.num_heads)


class PositionWiseFFN(gluon.HybridBlock):
    """Two dense layers with GELU between, applied at every position: ``(..., units) -> (..., units)``."""

    def __init__(self, units: int, hidden_size: int, **kwargs):
        super().__init__(**kwargs)
        self.ffn_1 = gluon.nn.Dense(hidden_size, flatten=False)
        self.activation = gluon.nn.GELU()
        self.ffn_2 = gluon.nn.Dense(units, flatten=False)

    def hybrid_forward(self, F, X):
        return self.ffn_2(self.activation(self.ffn_1(X)))


class AddNorm(gluon.HybridBlock):
    """Residual connection then layer normalization: ``norm(dropout(Y) + X)``."""

    def __init__(self, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout = gluon.nn.Dropout(dropout)
        self.norm = gluon.nn.LayerNorm()

    def hybrid_forward(self, F, X, Y):
        return self.norm(self.dropout(Y) + X)


class EncoderBlock(MaskedBlock):
    """Self-attention and a position-wise FFN, each followed by ``AddNorm``.

    ``X``: ``(batch_size, seq_len, units)``; ``mask``: ``None``, ``(batch_size, seq_len, seq_len)`` or valid
    lengths ``(batch_size,)``. Output: ``(batch_size, seq_len, units)``.
    """

    def __init__(self, units: int, hidden_size: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention = MultiHeadAttention(units, num_heads, dropout)
        self.add_1 = AddNorm(dropout)
        self.ffn = PositionWiseFFN(units, hidden_size)
        self.add_2 = AddNorm(dropout)

    def forward(self, X, mask=None):
        mask = self._matrix_mask(mask, X, X)
        return super().forward(X) if mask is None else super().forward(X, mask)

    def hybrid_forward(self, F, X, mask=None):
        Y = self.add_1(X, self.attention(X, X, X, mask))
        return self.add_2(Y, self.ffn(Y))
