"""The transformer blocks the tutorial imports from ``utils``.

They follow d2l's "Transformer" chapter, written as Gluon ``HybridBlock``s on the legacy
``nd``/``F`` API that the tutorial uses. Valid lengths mask attention to padded key positions.
"""
from __future__ import annotations

import math

import numpy as np
from mxnet import gluon


class PositionalEncoding(gluon.HybridBlock):
    """Sinusoidal position encoding added to the input, then dropout.

    Input and output: ``(batch_size, seq_len, units)`` with ``seq_len <= max_len``.
    """

    def __init__(self, units: int, dropout: float, max_len: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self._max_len = max_len
        pos = np.arange(max_len, dtype=np.float32).reshape(-1, 1)
        freq = np.power(10000, np.arange(0, units, 2, dtype=np.float32) / units)
        table = np.zeros((1, max_len, units), dtype=np.float32)
        table[0, :, 0::2] = np.sin(pos / freq)
        table[0, :, 1::2] = np.cos(pos / freq[: units // 2])
        self.dropout = gluon.nn.Dropout(dropout)
        with self.name_scope():
            # A constant, not a weight: it never receives gradients but moves with the block's context.
            self.P = self.params.get_constant('P', table)

    def hybrid_forward(self, F, X, P):
        return self.dropout(F.broadcast_add(X, F.slice_like(P, X, axes=(1,))))


class MultiHeadAttention(gluon.HybridBlock):
    """Multi-head scaled dot-product attention.

    ``queries``: ``(batch_size, num_queries, units)``; ``keys``/``values``: ``(batch_size, num_kv, units)``;
    ``valid_len``: ``None`` or ``(batch_size,)``, the number of leading key positions each example may attend to.
    Output: ``(batch_size, num_queries, units)``.
    """

    def __init__(self, units: int, num_heads: int, dropout: float, use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1 or units % num_heads:
            raise ValueError(f'units must be divisible by num_heads: got units={units}, num_heads={num_heads}')
        self.num_heads = num_heads
        self._scale = 1.0 / math.sqrt(units // num_heads)
        self.W_q = gluon.nn.Dense(units, use_bias=use_bias, flatten=False)
        self.W_k = gluon.nn.Dense(units, use_bias=use_bias, flatten=False)
        self.W_v = gluon.nn.Dense(units, use_bias=use_bias, flatten=False)
        self.W_o = gluon.nn.Dense(units, use_bias=use_bias, flatten=False)
        self.dropout = gluon.nn.Dropout(dropout)

    def _split_heads(self, F, X):
        # (B, T, units) -> (B * num_heads, T, units / num_heads)
        X = X.reshape((0, 0, self.num_heads, -1)).transpose((0, 2, 1, 3))
        return X.reshape((-3, 0, 0))

    def hybrid_forward(self, F, queries, keys, values, valid_len=None):
        Q = self._split_heads(F, self.W_q(queries))
        K = self._split_heads(F, self.W_k(keys))
        V = self._split_heads(F, self.W_v(values))
        scores = F.batch_dot(Q, K, transpose_b=True) * self._scale
        if valid_len is None:
            weights = F.softmax(scores, axis=-1)
        else:
            # One length per (example, head, query) row: softmax ignores keys at and past it.
            lengths = F.repeat(valid_len.astype('int32'), repeats=self.num_heads, axis=0)
            lengths = F.broadcast_like(lengths.reshape((-1, 1)), scores, lhs_axes=(1,), rhs_axes=(1,))
            weights = F.softmax(scores, length=lengths, use_length=True, axis=-1)
        out = F.batch_dot(self.dropout(weights), V)
        # (B * num_heads, T, d) -> (B, T, units)
        out = out.reshape((-4, -1, self.num_heads, 0, 0)).transpose((0, 2, 1, 3)).reshape((0, 0, -1))
        return self.W_o(out)


class AddNorm(gluon.HybridBlock):
    """Residual connection followed by layer normalization: ``LayerNorm(X + dropout(Y))``."""

    def __init__(self, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout = gluon.nn.Dropout(dropout)
        self.ln = gluon.nn.LayerNorm()

    def hybrid_forward(self, F, X, Y):
        return self.ln(self.dropout(Y) + X)


class PositionWiseFFN(gluon.HybridBlock):
    """Two dense layers applied at every position: ``units -> hidden_size -> units``.

    The tutorial's ``utils`` used ReLU (d2l's transformer); BERT uses GELU, which is the default here.
    """

    def __init__(self, units: int, hidden_size: int, activation: str = 'gelu', **kwargs):
        super().__init__(**kwargs)
        self.dense1 = gluon.nn.Dense(hidden_size, flatten=False)
        self.activation = gluon.nn.GELU() if activation == 'gelu' else gluon.nn.Activation(activation)
        self.dense2 = gluon.nn.Dense(units, flatten=False)

    def hybrid_forward(self, F, X):
        return self.dense2(self.activation(self.dense1(X)))


class EncoderBlock(gluon.HybridBlock):
    """Self-attention and a position-wise FFN, each wrapped in ``AddNorm``.

    ``X``: ``(batch_size, seq_len, units)``; ``mask``: ``None`` or valid lengths ``(batch_size,)``.
    """

    def __init__(self, units: int, hidden_size: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention = MultiHeadAttention(units, num_heads, dropout)
        self.addnorm1 = AddNorm(dropout)
        self.ffn = PositionWiseFFN(units, hidden_size)
        self.addnorm2 = AddNorm(dropout)

    def hybrid_forward(self, F, X, mask=None):
        Y = self.addnorm1(X, self.attention(X, X, X, mask))
        return self.addnorm2(Y, self.ffn(Y))
