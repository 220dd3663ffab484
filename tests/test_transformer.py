import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from bert_tutorial.utils import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_positional_encoding_is_a_learned_embedding_added():
    pe = PositionalEncoding(units=6, dropout=0.0, max_len=50)
    pe.initialize(mx.init.Normal(1.0))
    assert pe.embed.weight.shape == (50, 6)
    X = nd.random.normal(shape=(2, 10, 6))
    out = pe(X).asnumpy()
    # one float32 addition each way: equal to the ulp
    np.testing.assert_allclose(out, X.asnumpy() + pe.embed.weight.data().asnumpy()[None, :10], atol=1e-6)
    with pytest.raises(ValueError, match='X has 51 positions, more than max_len=50'):
        pe(nd.zeros((1, 51, 6)))
    assert PositionalEncoding(6).embed.weight.shape == (1000, 6)  # the tutorial's defaults: dropout 0, 1000


def test_multi_head_attention_matches_numpy_reference():
    units, heads, B, T = 8, 2, 3, 5
    att = MultiHeadAttention(units, heads, dropout=0.0)
    att.initialize(mx.init.Normal(0.5))
    X = nd.random.normal(shape=(B, T, units))
    valid = nd.array([2, 5, 1])
    out = att(X, X, X, valid).asnumpy()
    assert out.shape == (B, T, units)
    assert not hasattr(att, 'W_o')  # the tutorial's attention has no output projection

    Wq, Wk, Wv = (d.weight.data().asnumpy() for d in (att.W_q, att.W_k, att.W_v))
    x = X.asnumpy()
    d = units // heads
    expected = np.zeros_like(out)
    for b in range(B):
        q, k, v = x[b] @ Wq.T, x[b] @ Wk.T, x[b] @ Wv.T
        heads_out = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            scores = q[:, sl] @ k[:, sl].T / math.sqrt(d)
            scores[:, int(valid[b].asscalar()):] = -np.inf
            heads_out.append(_softmax(scores) @ v[:, sl])
        expected[b] = np.concatenate(heads_out, axis=1)
    # float32 against the numpy reference: sums of 8 products and a softmax; round-off ~1e-6 of O(1) values
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_rejects_units_not_divisible_by_heads():
    with pytest.raises(ValueError, match='units must be divisible by num_heads'):
        MultiHeadAttention(10, 3, 0.1)


def test_add_norm_and_ffn_shapes_and_values():
    addnorm = AddNorm(0.0)
    addnorm.initialize()
    X, Y = nd.random.normal(shape=(2, 3, 4)), nd.random.normal(shape=(2, 3, 4))
    out = addnorm(X, Y).asnumpy()
    s = (X + Y).asnumpy()
    expected = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-5)
    # LayerNorm of 4 values whose variance can be small: 1 / sqrt(var + 1e-5) (up to ~300) amplifies the float32
    # round-off of x - mean (~1e-7 |x|), hence 1e-4
    np.testing.assert_allclose(out, expected, atol=1e-4)

    ffn = PositionWiseFFN(4, 16)
    ffn.initialize()
    assert ffn(X).shape == (2, 3, 4)


@pytest.mark.parametrize('hybridize', [False, True])
def test_encoder_block_shape_and_mask(hybridize):
    blk = EncoderBlock(units=8, hidden_size=16, num_heads=2, dropout=0.5)
    blk.initialize()
    if hybridize:
        blk.hybridize()
    X = nd.random.normal(shape=(2, 6, 8))
    valid = nd.array([3, 6])
    out = blk(X, valid)
    assert out.shape == (2, 6, 8)
    # Changing the padding of example 0 must not change its valid positions (inference: no dropout).
    X2 = X.copy()
    X2[0, 3:] = 100.0
    out2 = blk(X2, valid)
    # padded keys get weight exactly 0: only float32 round-off of O(1) outputs could differ
    np.testing.assert_allclose(out[0, :3].asnumpy(), out2[0, :3].asnumpy(), atol=1e-5)
    # the padded rows themselves change by O(1)
    assert not np.allclose(out[0, 3:].asnumpy(), out2[0, 3:].asnumpy())
    # In training mode dropout makes two calls differ.
    with autograd.record():
        a, b = blk(X, valid), blk(X, valid)
    # dropout's masks change outputs by O(0.1)
    assert not np.allclose(a.asnumpy(), b.asnumpy())
