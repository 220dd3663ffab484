"""The C++ kernels (speed.kernels, speed.kernel_ops): LayerNorm against MXNet's, Dropout's exact values and
statistics, softmax with lengths, GELU and the self-attention products against MXNet's, the swaps into a classifier,
graphs without the library, and the pure-MXNet fallback."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import tiny_bert_config
from hypothesis import given, settings
from hypothesis import strategies as st
from mxnet import autograd, gluon, nd

from bert_tutorial import BERTClassifier, build_encoder
from bert_tutorial.recipes.export import fuse_classifier
from bert_tutorial.speed import kernels
from bert_tutorial.speed.kernel_ops import KernelDropout, KernelLayerNorm, standard_ops, use_kernels

ROOT = Path(__file__).resolve().parents[1]


needs_kernels = pytest.mark.usefixtures('kernels_loaded')


# ------------------------------------------------------------------------------------------------ LayerNorm

def _op_grads(op, inputs, dy):
    """``op``'s output on the numpy ``inputs`` and their gradients for the output gradient ``dy``."""
    arrays = [nd.array(a) for a in inputs]
    for a in arrays:
        a.attach_grad()
    with autograd.record():
        y = op(*arrays)
    y.backward(nd.array(dy))
    return [y.asnumpy()] + [a.grad.asnumpy() for a in arrays]


def _check_layer_norm(x, gamma, beta, dy, eps):
    ref = _op_grads(lambda a, g, b: nd.LayerNorm(a, g, b, axis=-1, eps=eps), (x, gamma, beta), dy)
    ours = _op_grads(lambda a, g, b: nd.bert_layer_norm(a, g, b, eps=eps)[0], (x, gamma, beta), dy)
    if x.shape[-1] == 1:
        # One unit: the output is beta whatever x, so x's gradient is exactly 0. Ours is; MXNet's is its round-off
        # times 1 / sqrt(eps) (up to 1e6), which no tolerance can cover.
        assert not ours[1].any()
        ref[1] = np.zeros_like(ref[1])
    for what, a, b in zip(('output', 'data grad', 'gamma grad', 'beta grad'), ref, ours):
        # float32 round-off of sums over a row (output, data) or over all rows (gamma, beta)
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5 * scale, err_msg=what)


@needs_kernels
@pytest.mark.parametrize('units', [1, 2, 3, 7, 33, 384, 1536])
@pytest.mark.parametrize('rows', [1, 5, 300])
def test_layer_norm_matches_mxnet(rows, units):
    rng = np.random.RandomState(units * 1000 + rows)
    shape = (rows, units)
    _check_layer_norm(rng.normal(2.0, 3.0, shape), rng.uniform(0.5, 1.5, units), rng.normal(size=units),
                      rng.normal(size=shape), 1e-12)


@needs_kernels
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), eps=st.sampled_from([1e-12, 1e-5, 0.1]),
       offset=st.floats(-10, 10), spread=st.floats(0.1, 100), seed=st.integers(0, 2**31 - 1))
def test_layer_norm_matches_mxnet_on_any_shape(shape, eps, offset, spread, seed):
    rng = np.random.RandomState(seed)
    units = shape[-1]
    _check_layer_norm(rng.normal(offset, spread, shape), rng.normal(size=units), rng.normal(size=units),
                      rng.normal(size=shape), eps)


@needs_kernels
def test_layer_norm_saves_mean_and_inverse_std():
    x = np.random.RandomState(0).normal(1.0, 2.0, (4, 3, 16)).astype(np.float32)
    out, mean, rstd = nd.bert_layer_norm(nd.array(x), nd.ones(16), nd.zeros(16), eps=1e-5)
    assert mean.shape == rstd.shape == (4, 3, 1)
    # means and 1 / sqrt(var + eps) of 16 values ~N(1, 2) against numpy: float32 sums of 16 terms, ~16 * 2**-24
    np.testing.assert_allclose(mean.asnumpy(), x.mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd.asnumpy(), 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5), rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize('hybridize', [False, True])
def test_kernel_layer_norm_block(hybridize):
    rng = np.random.RandomState(0)
    ref = gluon.nn.LayerNorm(epsilon=1e-12, in_channels=24)
    ref.initialize()
    ref.gamma.set_data(nd.array(rng.uniform(0.5, 1.5, 24)))
    ours = KernelLayerNorm(epsilon=1e-12, in_channels=24, prefix=ref.prefix, params=ref.params)
    assert ours.gamma is ref.gamma
    if hybridize:
        ours.hybridize(static_alloc=True)
    x, dy = nd.array(rng.normal(size=(2, 9, 24))), nd.array(rng.normal(size=(2, 9, 24)))
    results = []
    for block in (ref, ours):
        xx = x.copy()
        xx.attach_grad()
        with autograd.record():
            y = block(xx)
        y.backward(dy)
        results.append([y.asnumpy(), xx.grad.asnumpy(), block.gamma.grad().asnumpy().copy()])
    for a, b in zip(*results):
        # float32 round-off of sums over a row of 24 (output, data grad) or over 18 rows (gamma grad)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_bad_input_is_an_error():
    with pytest.raises(mx.base.MXNetError, match='gamma and beta must have shape'):
        nd.bert_layer_norm(nd.ones((2, 4)), nd.ones(3), nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r'p must be a number in \[0, 1\)'):
        nd.bert_dropout(nd.ones((2, 4)), nd.zeros(1), p=1.0)[0].wait_to_read()


# -------------------------------------------------------------------------------------------------- Dropout

TRAIN, PREDICT = nd.array([0.0]), nd.array([1.0])


def _dropout(x, dy, p, **attrs):
    x = nd.array(x)
    x.attach_grad()
    with autograd.record():
        y = nd.bert_dropout(x, TRAIN, p=p, **attrs)[0]
    y.backward(nd.array(dy))
    return y.asnumpy(), x.grad.asnumpy()


@needs_kernels
@pytest.mark.parametrize('p', [0.1, 0.5, 0.9])
def test_dropout_values_are_exact(p):
    rng = np.random.RandomState(1)
    x = rng.normal(size=(64, 384)).astype(np.float32)
    dy = (rng.uniform(0.5, 1.5, x.shape) * rng.choice([-1, 1], x.shape)).astype(np.float32)  # never 0
    y, grad = _dropout(x, dy, p)
    keep = grad != 0
    scale = np.float32(1.0 / (1.0 - p))  # what MXNet's Dropout multiplies by
    np.testing.assert_array_equal(y, np.where(keep, x * scale, np.float32(0)))
    np.testing.assert_array_equal(grad, np.where(keep, dy * scale, np.float32(0)))
    assert 0 < keep.mean() < 1


@needs_kernels
@pytest.mark.parametrize('p', [0.1, 0.5, 0.9])
def test_dropout_statistics(p):
    n = 1_000_000
    y, _ = _dropout(np.ones(n, np.float32), np.ones(n, np.float32), p, seed=7, offset=3)
    keep = y != 0
    tolerance = 5 * np.sqrt(p * (1 - p) / n)  # 5 standard deviations of the keep rate
    assert abs(keep.mean() - (1 - p)) < tolerance
    # neighbours and the next step's mask: independent draws
    assert abs((keep[1:] & keep[:-1]).mean() - (1 - p) ** 2) < 2 * tolerance
    other, _ = _dropout(np.ones(n, np.float32), np.ones(n, np.float32), p, seed=7, offset=4)
    assert abs((keep & (other != 0)).mean() - (1 - p) ** 2) < 2 * tolerance


@needs_kernels
def test_dropout_mask_comes_from_seed_and_step():
    x = np.ones((32, 48), np.float32)

    def mask(**attrs):
        return _dropout(x, x, 0.3, **attrs)[0] != 0

    np.testing.assert_array_equal(mask(seed=11, offset=5), mask(seed=11, offset=5))
    assert (mask(seed=11, offset=5) != mask(seed=11, offset=6)).any()
    assert (mask(seed=11, offset=5) != mask(seed=12, offset=5)).any()
    # without a seed attribute: MXNet's generator, i.e. mx.random.seed (what loop.seed_step sets per step)
    mx.random.seed(3)
    first, second = mask(), mask()
    mx.random.seed(3)
    np.testing.assert_array_equal(mask(), first)
    np.testing.assert_array_equal(mask(), second)
    assert (first != second).any()


@needs_kernels
@pytest.mark.parametrize('hybridize', [False, True])
def test_kernel_dropout_block(hybridize):
    block = KernelDropout(0.4)
    if hybridize:
        block.hybridize(static_alloc=True)
    x = nd.array(np.random.RandomState(0).uniform(1, 2, (16, 40)))
    np.testing.assert_array_equal(block(x).asnumpy(), x.asnumpy())  # predict mode: identity, as nn.Dropout
    results = []
    for _ in range(2):
        mx.random.seed(5)
        xx = x.copy()
        xx.attach_grad()
        with autograd.record():
            y = block(xx)
        y.backward(nd.ones_like(y))
        results.append((y.asnumpy(), xx.grad.asnumpy()))
    (y, grad), (y2, grad2) = results
    np.testing.assert_array_equal(y, y2)
    scale = np.float32(1 / 0.6)
    np.testing.assert_array_equal(grad, np.where(y != 0, scale, np.float32(0)))
    assert 0.4 < (y != 0).mean() < 0.8


@needs_kernels
def test_dropout_masks_same_imperative_and_hybridized():
    x = nd.ones((8, 100))
    masks = []
    for hybridize in (False, True):
        block = KernelDropout(0.5)
        if hybridize:
            block.hybridize(static_alloc=True)
        mx.random.seed(9)
        with autograd.record():
            masks.append(block(x).asnumpy())
    np.testing.assert_array_equal(masks[0], masks[1])


# ------------------------------------------------------------------------------------------ softmax, GELU

def _value_and_grad(op, x, dy):
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        y = op(a)
    y.backward(nd.array(dy))
    return y.asnumpy(), a.grad.asnumpy()


def _check_softmax(x, length, dy, dtype='int32'):
    lengths = nd.array(length, dtype=dtype)
    ref = _value_and_grad(lambda a: nd.softmax(a, lengths, axis=-1, use_length=True), x, dy)
    ours = _value_and_grad(lambda a: nd.bert_softmax(a, lengths), x, dy)
    for what, a, b in zip(('output', 'data grad'), ref, ours):
        # float32 round-off of a sum over a row (and of exp: ours is a polynomial, MXNet's expf)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(a).max())), err_msg=what)
    n = np.clip(length, 0, x.shape[-1])[..., None]
    after = np.arange(x.shape[-1]) >= n
    assert not ours[0][after].any() and not ours[1][after].any()  # exact zeros after the length
    return ours


@needs_kernels
@pytest.mark.parametrize('keys', [1, 2, 3, 7, 16, 17, 33, 128, 129])
@pytest.mark.parametrize('dtype', ['int32', 'int64'])
def test_softmax_matches_mxnet(keys, dtype):
    rng = np.random.RandomState(keys)
    x = rng.normal(0, 4, (3, 5, keys)).astype(np.float32)
    length = rng.randint(1, keys + 1, size=(3, 5))
    length[0] = 1                        # one key
    length[1] = keys                     # all keys
    out, _ = _check_softmax(x, length, rng.normal(size=x.shape).astype(np.float32), dtype)
    # a float32 sum of <= 30 probabilities: within 30 * 2**-24 ~ 2e-6 of 1
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-5)
    np.testing.assert_array_equal(out[0, :, 0], 1)


@needs_kernels
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), keys=st.integers(1, 70),
       scale=st.sampled_from([0.1, 1.0, 30.0]), seed=st.integers(0, 2 ** 31 - 1))
def test_softmax_matches_mxnet_on_any_shape(shape, keys, scale, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(0, scale, shape + [keys]).astype(np.float32)
    length = rng.randint(1, keys + 1, size=shape)
    _check_softmax(x, length, rng.normal(size=x.shape).astype(np.float32))


@needs_kernels
def test_softmax_length_zero_and_extreme_scores():
    x = np.array([[[0.0, 1.0, 2.0], [-1e30, 0.0, 1e30], [-200.0, 0.0, -200.0], [5.0, 5.0, 5.0]]], np.float32)
    length = np.array([[0, 3, 3, 2]])
    out, grad = _value_and_grad(lambda a: nd.bert_softmax(a, nd.array(length, dtype='int32')), x, np.ones_like(x))
    ref = nd.softmax(nd.array(x[:, 1:]), nd.array(length[:, 1:], dtype='int32'), axis=-1, use_length=True)
    assert not out[0, 0].any() and not grad[0, 0].any()  # length 0: zeros, as MXNet's
    # the same softmax of <= 3 entries: a few ulps
    np.testing.assert_allclose(out[:, 1:], ref.asnumpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_array_equal(out[0, 3], [0.5, 0.5, 0])


@needs_kernels
def test_softmax_bad_input_is_an_error():
    with pytest.raises(mx.MXNetError, match='length'):
        nd.bert_softmax(nd.ones((2, 3, 4)), nd.ones((2, 4), dtype='int32')).wait_to_read()
    with pytest.raises(mx.MXNetError, match='int32 or int64'):
        nd.bert_softmax(nd.ones((2, 3, 4)), nd.ones((2, 3))).wait_to_read()


@needs_kernels
@pytest.mark.parametrize('size', [1, 7, 16, 33, 1000, 40000])
def test_gelu_matches_mxnet(size):
    rng = np.random.RandomState(size)
    x = np.concatenate([rng.normal(0, 3, size), [0.0, -0.0, 1e-30, -1e-30, 12.0, -12.0, 40.0, -40.0]])
    x = x.astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    ref = _value_and_grad(lambda a: nd.LeakyReLU(a, act_type='gelu'), x, dy)
    ours = _value_and_grad(lambda a: nd.bert_gelu(a), x, dy)
    for what, a, b in zip(('output', 'data grad'), ref, ours):
        # erf as oneDNN's (|error| < 1.5e-7): absolute round-off of 0.5 x (1 + erf) and its derivative
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=what)


@needs_kernels
@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 30), min_size=1, max_size=3), scale=st.sampled_from([0.01, 1.0, 5.0]),
       seed=st.integers(0, 2 ** 31 - 1))
def test_gelu_matches_mxnet_on_any_shape(shape, scale, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(0, scale, shape).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    ref = _value_and_grad(lambda a: nd.LeakyReLU(a, act_type='gelu'), x, dy)
    ours = _value_and_grad(lambda a: nd.bert_gelu(a), x, dy)
    for a, b in zip(ref, ours):
        # as above: erf within 1.5e-7 and the round-off of 0.5 x (1 + erf), scaled by the inputs' size
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(1.0, scale))


# --------------------------------------------------------------------------------- self-attention products

def _attention_grads(qk, valatt, qkv, att, d_scores, d_out, heads):
    x, a = nd.array(qkv), nd.array(att)
    x.attach_grad()
    a.attach_grad()
    with autograd.record():
        scores = qk(x, heads)
        out = valatt(x, a, heads)
    autograd.backward([scores, out], [nd.array(d_scores), nd.array(d_out)])
    return [scores.asnumpy(), out.asnumpy(), x.grad.asnumpy(), a.grad.asnumpy()]


def _attention_float64(qkv, att, d_scores, d_out, heads):
    """The products in float64 numpy: scores, out, d(qkv) (both ops' parts summed), d(attention)."""
    seq, batch, width = qkv.shape
    dim = width // (3 * heads)
    x = qkv.astype(np.float64).reshape(seq, batch, heads, 3, dim).transpose(3, 1, 2, 0, 4)  # (3, b, h, seq, dim)
    q, k, v = x.reshape(3, batch * heads, seq, dim)
    a, gs = att.astype(np.float64), d_scores.astype(np.float64)
    go = d_out.astype(np.float64).reshape(seq, batch * heads, dim).transpose(1, 0, 2)  # (b * h, seq, dim)
    scale = 1 / np.sqrt(dim)
    scores = scale * q @ k.transpose(0, 2, 1)
    out = (a @ v).transpose(1, 0, 2).reshape(seq, batch, heads * dim)
    grads = np.stack([scale * gs @ k, scale * gs.transpose(0, 2, 1) @ q, a.transpose(0, 2, 1) @ go])
    d_qkv = grads.reshape(3, batch, heads, seq, dim).transpose(3, 1, 2, 0, 4).reshape(qkv.shape)
    return [scores, out, d_qkv, go @ v.transpose(0, 2, 1)]


def _mxnet_qk(x, heads):
    return nd.contrib.interleaved_matmul_selfatt_qk(x, heads=heads)


def _mxnet_valatt(x, att, heads):
    return nd.contrib.interleaved_matmul_selfatt_valatt(x, att, heads=heads)


def _check_attention(seq, batch, heads, dim, seed):
    rng = np.random.RandomState(seed)
    qkv = rng.normal(size=(seq, batch, 3 * heads * dim)).astype(np.float32)
    att = rng.uniform(size=(batch * heads, seq, seq)).astype(np.float32)
    d_scores = rng.normal(size=att.shape).astype(np.float32)
    d_out = rng.normal(size=(seq, batch, heads * dim)).astype(np.float32)
    args = (qkv, att, d_scores, d_out, heads)
    ref = _attention_grads(_mxnet_qk, _mxnet_valatt, *args)
    ours = _attention_grads(lambda x, h: nd.bert_selfatt_qk(x, heads=h),
                            lambda x, a, h: nd.bert_selfatt_valatt(x, a, heads=h), *args)
    exact = _attention_float64(*args)
    for what, a, b, c in zip(('scores', 'output', 'qkv grad', 'attention grad'), ref, ours, exact):
        assert b.shape == a.shape == c.shape and b.dtype == np.float32, what
        # float32 round-off of sums of seq_len or head_dim products
        tolerance = dict(rtol=1e-5, atol=2e-6 * max(1.0, float(np.abs(c).max())), err_msg=what)
        np.testing.assert_allclose(b, a, **tolerance)
        np.testing.assert_allclose(b, c, **tolerance)
        np.testing.assert_allclose(a, c, **tolerance)  # the reference itself
    return ours


@needs_kernels
@pytest.mark.parametrize('seq, batch, heads, dim', [
    (1, 1, 1, 1), (1, 3, 12, 32), (2, 1, 1, 3), (7, 3, 12, 17), (17, 2, 5, 33), (32, 4, 12, 32), (33, 2, 3, 64),
    (128, 1, 12, 64)])
def test_selfatt_matches_mxnet(seq, batch, heads, dim):
    scores, out, d_qkv, d_att = _check_attention(seq, batch, heads, dim, seq * 1000 + dim)
    assert scores.shape == d_att.shape == (batch * heads, seq, seq) and out.shape == (seq, batch, heads * dim)


@needs_kernels
@settings(max_examples=30, deadline=None)
@given(seq=st.integers(1, 40), batch=st.integers(1, 5), heads=st.sampled_from([1, 2, 3, 12]),
       dim=st.integers(1, 40), seed=st.integers(0, 2 ** 31 - 1))
def test_selfatt_matches_mxnet_on_any_shape(seq, batch, heads, dim, seed):
    _check_attention(seq, batch, heads, dim, seed)


@needs_kernels
def test_selfatt_gradients_fill_only_their_blocks():
    rng = np.random.RandomState(3)
    seq, batch, heads, dim = 5, 2, 3, 4
    x = nd.array(rng.normal(size=(seq, batch, 3 * heads * dim)))
    att = nd.array(rng.uniform(size=(batch * heads, seq, seq)))
    blocks = []
    for op in (lambda x: nd.bert_selfatt_qk(x, heads=heads), lambda x: nd.bert_selfatt_valatt(x, att, heads=heads)):
        xx = x.copy()
        xx.attach_grad()
        with autograd.record():
            y = op(xx)
        y.backward(nd.ones_like(y))
        blocks.append(xx.grad.asnumpy().reshape(seq, batch, heads, 3, dim))
    qk, valatt = blocks
    assert not qk[..., 2, :].any() and qk[..., :2, :].all()  # the v blocks exactly 0
    assert not valatt[..., :2, :].any() and valatt[..., 2, :].all()  # the q and k blocks exactly 0


@needs_kernels
def test_selfatt_bad_input_is_an_error():
    with pytest.raises(mx.MXNetError, match='bert_selfatt_qk: queries_keys_values must be float32'):
        nd.bert_selfatt_qk(nd.ones((4, 2, 12), dtype='float64'), heads=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match='bert_selfatt_valatt: queries_keys_values and attention must be float32'):
        nd.bert_selfatt_valatt(nd.ones((4, 2, 12)), nd.ones((4, 4, 4), dtype='float16'), heads=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match=r'shape \(seq_len, batch, 3 \* heads \* head_dim\)'):
        nd.bert_selfatt_qk(nd.ones((4, 2, 12)), heads=3).wait_to_read()  # 12 is not a multiple of 9
    with pytest.raises(mx.MXNetError, match=r'shape \(seq_len, batch, 3 \* heads \* head_dim\)'):
        nd.bert_selfatt_qk(nd.ones((4, 24)), heads=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match=r'attention must have shape \(batch \* heads, seq_len, seq_len\) = '
                                            r'\(4, 4, 4\)'):
        nd.bert_selfatt_valatt(nd.ones((4, 2, 12)), nd.ones((2, 4, 4)), heads=2).wait_to_read()
    with pytest.raises(mx.MXNetError, match='heads must be an integer >= 1'):
        nd.bert_selfatt_qk(nd.ones((4, 2, 12)), heads=0).wait_to_read()
    with pytest.raises(mx.MXNetError, match='heads must be an integer >= 1'):
        nd.bert_selfatt_valatt(nd.ones((4, 2, 12)), nd.ones((4, 4, 4))).wait_to_read()


@needs_kernels
@pytest.mark.parametrize('softmax', [False, True])
@pytest.mark.parametrize('hybridize', [False, True])
def test_attention_swap_inside_a_classifier(tiny_vocab, hybridize, softmax):
    from gluonnlp.model.bert import DotProductSelfAttentionCell

    from bert_tutorial.speed import KernelSelfAttentionCell

    net = _classifier(tiny_vocab, dropout=0.1)
    before, before_grads = _grads(net)
    names = sorted(net.collect_params())
    cell = next(b for b in _blocks(net) if type(b) is DotProductSelfAttentionCell)
    counts = use_kernels(net, layer_norm=False, dropout=False, softmax=softmax, attention=True)
    assert counts == {'kernels': True, 'layer_norm': 0, 'dropout': 0, 'softmax': int(softmax), 'gelu': 0,
                      'attention': 1, 'dense': 0}
    swapped = next(b for b in _blocks(net) if type(b) is KernelSelfAttentionCell)
    assert swapped.query_weight is cell.query_weight and swapped.dropout_layer is cell.dropout_layer
    assert sorted(net.collect_params()) == names
    _same_as_before(net, before, before_grads, hybridize)
    graph = _ops(net(*[mx.sym.var(n) for n in ('data0', 'data1', 'data2')]))
    assert {'bert_selfatt_qk', 'bert_selfatt_valatt'} <= graph and ('bert_softmax' in graph) == softmax
    assert not {'_contrib_interleaved_matmul_selfatt_qk', '_contrib_interleaved_matmul_selfatt_valatt'} & graph
    with standard_ops(net):
        graph = _ops(net(*[mx.sym.var(n) for n in ('data0', 'data1', 'data2')]))
        assert not any(op.startswith('bert_') for op in graph)
        assert {'_contrib_interleaved_matmul_selfatt_qk', '_contrib_interleaved_matmul_selfatt_valatt'} <= graph
        # MXNet's operators against the kernels: the same sums in other orders in a 1-layer, 16-unit classifier with
        # N(0, 0.02) weights: scores O(0.1), round-off ~1e-7
        np.testing.assert_allclose(net(*INPUTS).asnumpy(), before, rtol=1e-5, atol=1e-6)
    assert type(next(b for b in _blocks(net) if isinstance(b, DotProductSelfAttentionCell))) is KernelSelfAttentionCell


# ------------------------------------------------------------------------------------- swap and export

def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


INPUTS = nd.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]]), nd.zeros((2, 5)), nd.array([4, 3])


def _classifier(tiny_vocab, dropout):
    net = BERTClassifier(build_encoder(tiny_bert_config(len(tiny_vocab), dropout=dropout)), 2, dropout=dropout)
    net.initialize(mx.init.Normal(0.02))
    return net


def _grads(net):
    with autograd.record(train_mode=False):
        y = net(*INPUTS)
    y.backward()
    return y.asnumpy(), {p.name: p.grad().asnumpy().copy() for p in net.collect_params().values()}


def _same_as_before(net, before, before_grads, hybridize):
    """``net`` (hybridized if asked) gives the output and gradients it gave before its blocks were swapped, within
    float32 round-off."""
    if hybridize:
        net.hybridize(static_alloc=True)
    after, after_grads = _grads(net)
    # the same sums in other orders (1 layer, 16 units, scores O(0.1)): round-off ~1e-7
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    for name, grad in before_grads.items():
        # weight gradients sum products over 7 tokens that partly cancel (LayerNorm's backward subtracts means): their
        # round-off is relative to the largest term, not to the result: the absolute term bounds it
        np.testing.assert_allclose(after_grads[name], grad, rtol=1e-4, atol=1e-6, err_msg=name)


@needs_kernels
def test_swap_inside_a_classifier(tiny_vocab, tmp_path):
    net = _classifier(tiny_vocab, dropout=0.1)
    before, before_grads = _grads(net)
    net.save_parameters(str(tmp_path / 'before.params'))
    norms = sum(type(b) is gluon.nn.LayerNorm for b in _blocks(net))
    drops = sum(type(b) is gluon.nn.Dropout for b in _blocks(net))
    assert norms == 3 and drops >= 4  # embedding's and 2 per layer; embedding, attention, 2 in the layer, head
    assert use_kernels(net) == {'kernels': True, 'layer_norm': norms, 'dropout': drops, 'softmax': 0, 'gelu': 0,
                                'attention': 0, 'dense': 0}
    assert not any(type(b) in (gluon.nn.LayerNorm, gluon.nn.Dropout) for b in _blocks(net))
    net.hybridize(static_alloc=True)
    after, after_grads = _grads(net)
    # MatmulLayerNorm's reductions as FullyConnected and the kernels' sums: other orders, round-off only
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    for name, grad in before_grads.items():
        # gradients whose terms cancel (LayerNorm's backward): round-off relative to the largest term; atol bounds it
        np.testing.assert_allclose(after_grads[name], grad, rtol=1e-3, atol=1e-5, err_msg=name)
    net.save_parameters(str(tmp_path / 'after.params'))
    saved = [nd.load(str(tmp_path / f'{name}.params')) for name in ('before', 'after')]
    assert sorted(saved[0]) == sorted(saved[1])
    for key in saved[0]:
        np.testing.assert_array_equal(saved[0][key].asnumpy(), saved[1][key].asnumpy())
    # training: dropout on, reproducible from the seed
    outputs = []
    for seed in (1, 1, 2):
        mx.random.seed(seed)
        with autograd.record():
            outputs.append(net(*INPUTS).asnumpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert (outputs[0] != outputs[2]).any() and (outputs[0] != after).any()


@needs_kernels
@pytest.mark.parametrize('hybridize', [False, True])
def test_softmax_and_gelu_swap_inside_a_classifier(tiny_vocab, tmp_path, hybridize):
    from gluonnlp.model.bert import DotProductSelfAttentionCell
    from gluonnlp.model.block import GELU

    from bert_tutorial.speed import KernelGELU, KernelSelfAttentionCell

    net = _classifier(tiny_vocab, dropout=0.1)
    before, before_grads = _grads(net)
    names = sorted(net.collect_params())
    cells = [b for b in _blocks(net) if type(b) is DotProductSelfAttentionCell]
    gelus = [b for b in _blocks(net) if type(b) is GELU]
    assert len(cells) == 1 and len(gelus) == 1
    counts = use_kernels(net, layer_norm=False, dropout=False, softmax=True, gelu=True)
    assert counts == {'kernels': True, 'layer_norm': 0, 'dropout': 0, 'softmax': 1, 'gelu': 1, 'attention': 0,
                      'dense': 0}
    swapped = [b for b in _blocks(net) if type(b) is KernelSelfAttentionCell]
    assert len(swapped) == 1 and sum(type(b) is KernelGELU for b in _blocks(net)) == 1
    assert swapped[0].dropout_layer is cells[0].dropout_layer  # the dropout child is kept
    assert all(getattr(swapped[0], n) is getattr(cells[0], n) for n in ('query_weight', 'value_bias'))
    assert sorted(net.collect_params()) == names
    _same_as_before(net, before, before_grads, hybridize)
    # with the other kernels too: the attention cell's dropout becomes a KernelDropout
    counts = use_kernels(net, softmax=True, gelu=True)
    assert counts['layer_norm'] == 3 and counts['dropout'] >= 4 and counts['softmax'] == counts['gelu'] == 0
    assert type(swapped[0].dropout_layer) is KernelDropout
    assert not any(type(b) in (gluon.nn.LayerNorm, gluon.nn.Dropout, GELU, DotProductSelfAttentionCell)
                   for b in _blocks(net))
    again, again_grads = _grads(net)
    # every kernel at once: the same sums in other orders, round-off only
    np.testing.assert_allclose(again, before, rtol=1e-4, atol=1e-5)
    for name, grad in before_grads.items():
        # gradients whose terms cancel (LayerNorm's backward): round-off relative to the largest term; atol bounds it
        np.testing.assert_allclose(again_grads[name], grad, rtol=1e-3, atol=1e-5, err_msg=name)


@needs_kernels
def test_package_blocks_gelu_swap():
    from bert_tutorial.speed import KernelGELU
    from bert_tutorial.tutorial.transformer import PositionWiseFFN

    ffn = PositionWiseFFN(8, 16)
    ffn.initialize(mx.init.Normal(0.5))
    x = nd.random.normal(shape=(2, 3, 8))
    before = _value_and_grad(ffn, x.asnumpy(), np.ones((2, 3, 8), np.float32))
    assert use_kernels(ffn, gelu=True)['gelu'] == 1 and type(ffn.activation) is KernelGELU
    ffn.hybridize()
    after = _value_and_grad(ffn, x.asnumpy(), np.ones((2, 3, 8), np.float32))
    for a, b in zip(before, after):
        # GELU's kernel and MXNet's: erf within 1.5e-7, round-off of O(1) values
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    with standard_ops(ffn):
        assert type(ffn.activation) is gluon.nn.GELU
    assert type(ffn.activation) is KernelGELU


def _ops(sym):
    return {node['op'] for node in json.loads(sym.tojson())['nodes']}


@needs_kernels
def test_graphs_for_export_use_mxnet_operators(tiny_vocab):
    net = _classifier(tiny_vocab, dropout=0.1)
    use_kernels(net, softmax=True, gelu=True, attention=True)
    net.hybridize(static_alloc=True)
    expected = net(*INPUTS).asnumpy()
    names = ('data0', 'data1', 'data2')
    ours = {'bert_layer_norm', 'bert_dropout', 'bert_softmax', 'bert_gelu', 'bert_selfatt_qk', 'bert_selfatt_valatt'}
    assert ours <= _ops(net(*[mx.sym.var(n) for n in names]))
    with standard_ops(net):
        standard = _ops(net(*[mx.sym.var(n) for n in names]))
        assert not any(op.startswith('bert_') for op in standard)
        assert {'LayerNorm', 'Dropout', 'softmax', 'LeakyReLU', '_contrib_interleaved_matmul_selfatt_qk',
                '_contrib_interleaved_matmul_selfatt_valatt'} <= standard
        # other operators (MatmulLayerNorm, MXNet's) on the same parameters: round-off of O(0.1) scores
        np.testing.assert_allclose(net(*INPUTS).asnumpy(), expected, rtol=1e-4, atol=1e-5)
    assert ours <= _ops(net(*[mx.sym.var(n) for n in names]))  # restored
    # back on the kernels: round-off of O(0.1) scores at most
    np.testing.assert_allclose(net(*INPUTS).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    fused = fuse_classifier(net)
    assert not any(op.startswith('bert_') for op in _ops(fused(*[mx.sym.var(n) for n in names])))
    # oneDNN's fused graph: the same sums in other orders, round-off of O(0.1) scores
    np.testing.assert_allclose(fused(*INPUTS).asnumpy(), expected, rtol=1e-4, atol=1e-5)


def _run_python(code, tmp_path, **env):
    # the switch only as the test gives it, not as the shell running the tests has it
    environment = {k: v for k, v in os.environ.items() if k != kernels.ENV_SWITCH}
    environment.update(PYTHONPATH=f'{ROOT}{os.pathsep}{ROOT / "tests"}', MXNET_HOME=str(tmp_path), **env)
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=environment,
                          cwd=str(tmp_path), timeout=300)


@needs_kernels
def test_export_loads_without_the_library(tiny_bert, tiny_vocab, tmp_path):
    from bert_tutorial import load_model, save_model
    from bert_tutorial.recipes.export import export_classifier
    from bert_tutorial.recipes.hub import classifier_config

    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    use_kernels(net, softmax=True, gelu=True)  # the model in memory runs the kernels; what is saved and exported does
    # not need them
    save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))
    out = export_classifier(tmp_path / 'm')
    assert not any(op.startswith('bert_') for op in _ops(mx.sym.load(str(out / 'model-symbol.json'))))
    expected = load_model(out)[0](*INPUTS).asnumpy()
    code = ('import sys, mxnet as mx, numpy as np\n'
            'from bert_tutorial import load_model\n'
            f'block, _, _ = load_model({str(out)!r})\n'
            'ids, seg, valid = mx.nd.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]]), mx.nd.zeros((2, 5)), '
            'mx.nd.array([4, 3])\n'
            'assert not hasattr(mx.nd, "bert_layer_norm")\n'
            'np.save("scores.npy", block(ids, seg, valid).asnumpy())\n')
    done = _run_python(code, tmp_path, BERT_TUTORIAL_KERNELS='off')
    assert done.returncode == 0, done.stderr
    # the export run by MXNet alone in another process: other operators, the same sums: round-off of O(0.1) scores
    np.testing.assert_allclose(np.load(tmp_path / 'scores.npy'), expected, rtol=1e-5, atol=1e-6)


@needs_kernels
def test_save_model_refuses_an_export_that_needs_the_library(tiny_vocab, tmp_path):
    from bert_tutorial import save_model
    from bert_tutorial.recipes.hub import classifier_config

    net = _classifier(tiny_vocab, dropout=0.1)
    use_kernels(net, softmax=True)
    net.hybridize(static_alloc=True)
    net(*INPUTS)
    config = dict(classifier_config(net, 32, ['negative', 'positive']), model_type='exported_classifier')
    ours = r"C\+\+ operators \(bert_dropout, bert_layer_norm, bert_softmax\).*standard_ops"
    with pytest.raises(ValueError, match=ours):
        save_model(tmp_path / 'e', net, tiny_vocab, config)
    assert not [p for p in (tmp_path / 'e').iterdir() if 'model' in p.name]  # no graph left behind
    with standard_ops(net):
        net(*INPUTS)
        save_model(tmp_path / 'e', net, tiny_vocab, config)
    assert not any(op.startswith('bert_') for op in _ops(mx.sym.load(str(tmp_path / 'e' / 'model-symbol.json'))))


# ------------------------------------------------------------------------------------------------ fallback

@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """``load_kernels`` as in a new process (its decision forgotten), with an empty cache."""
    monkeypatch.setattr(kernels, '_state', None)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.delenv(kernels.ENV_SWITCH, raising=False)  # each test sets the switch it is about
    return kernels


def _fallback_classifier_works(tiny_vocab):
    net = _classifier(tiny_vocab, dropout=0.1)
    expected = net(*INPUTS).asnumpy()
    assert use_kernels(net) == {'kernels': False, 'layer_norm': 3, 'dropout': 0, 'softmax': 0, 'gelu': 0,
                                'attention': 0, 'dense': 0}
    assert {type(b).__name__ for b in _blocks(net)} >= {'MatmulLayerNorm', 'Dropout'}
    assert not any(isinstance(b, (KernelLayerNorm, KernelDropout)) for b in _blocks(net))
    net.hybridize(static_alloc=True)
    # other operators (MatmulLayerNorm, MXNet's) on the same parameters: round-off of O(0.1) scores
    np.testing.assert_allclose(net(*INPUTS).asnumpy(), expected, rtol=1e-4, atol=1e-5)


def _one_line(caplog, text):
    lines = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
    assert len(lines) == 1 and text in lines[0], lines


@pytest.mark.parametrize('cxx', ['/nonexistent/g++', '/bin/false'])
def test_fallback_without_a_working_compiler(fresh_kernels, monkeypatch, caplog, tiny_vocab, cxx):
    monkeypatch.setenv('CXX', cxx)
    with caplog.at_level(logging.INFO, logger=kernels.__name__):
        _fallback_classifier_works(tiny_vocab)
        assert not fresh_kernels.load_kernels()  # decided once: no second attempt, no second line
    if 'nonexistent' not in cxx:  # a build was tried: announced first (it takes 10-30 s), then its failure
        announced = [r for r in caplog.records if 'compiling the C++ kernels' in r.getMessage()]
        assert len(announced) == 1 and announced[0].levelno == logging.INFO
        caplog.records.remove(announced[0])
    _one_line(caplog, 'pure MXNet operators (no C++ compiler' if 'nonexistent' in cxx else
              'pure MXNet operators (the C++ kernels did not build')
    assert fresh_kernels.loaded_library() is None


def test_fallback_when_switched_off(fresh_kernels, monkeypatch, caplog, tiny_vocab):
    monkeypatch.setenv('BERT_TUTORIAL_KERNELS', 'off')
    with caplog.at_level(logging.INFO, logger=kernels.__name__):
        _fallback_classifier_works(tiny_vocab)
    _one_line(caplog, 'pure MXNet operators (BERT_TUTORIAL_KERNELS=off)')


def test_bad_switch_value(fresh_kernels, monkeypatch):
    monkeypatch.setenv('BERT_TUTORIAL_KERNELS', 'maybe')
    with pytest.raises(ValueError, match='BERT_TUTORIAL_KERNELS'):
        fresh_kernels.load_kernels()


def _swap_in_new_process(tmp_path, swap, dropout=0.0, check='', **env):
    """A tiny classifier in a new Python process (``env`` added to its environment, logs on standard error):
    prints ``swap`` (an expression on ``net``, e.g. ``use_kernels(net)``), then the shape of a hybridized forward,
    then runs ``check``."""
    code = ('import logging, mxnet as mx\n'
            'logging.basicConfig(level=logging.INFO, format="%(name)s|%(message)s")\n'
            'from conftest import tiny_bert_config\n'
            'from bert_tutorial import BERTClassifier, build_encoder\n'
            'from bert_tutorial.speed import use_kernels\n'
            f'net = BERTClassifier(build_encoder(tiny_bert_config(20, dropout={dropout})), 2)\n'
            'net.initialize()\n'
            f'print({swap})\n'
            'net.hybridize()\n'
            'print(net(mx.nd.array([[2, 5, 3]]), mx.nd.zeros((1, 3)), mx.nd.array([3])).shape)\n'
            f'{check}\n')
    return _run_python(code, tmp_path, **env)


def test_fallback_in_a_new_process_without_compiler(tmp_path):
    done = _swap_in_new_process(tmp_path, 'use_kernels(net)', dropout=0.1,
                                check='assert not hasattr(mx.nd, "bert_layer_norm")', CXX=str(tmp_path / 'no-compiler'))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["{'kernels': False, 'layer_norm': 3, 'dropout': 0, 'softmax': 0, 'gelu': 0, "
                                        "'attention': 0, 'dense': 0}", '(1, 2)']
    lines = [line for line in done.stderr.splitlines() if line.startswith('bert_tutorial.speed.kernels|')]
    assert lines == [f'bert_tutorial.speed.kernels|bert_tutorial kernels: pure MXNet operators (no C++ compiler: '
                     f'{tmp_path / "no-compiler"} not found)']
    assert not (tmp_path / 'bert_tutorial').exists()  # nothing written to the cache


@needs_kernels
def test_library_is_cached_under_mxnet_home():
    path = kernels.loaded_library()
    assert path is not None and path.name == 'libbert_kernels.so' and path.is_file()
    assert path.parent.parent == kernels.mxnet_home() / 'bert_tutorial' / 'kernels'
    assert path == kernels.library_path(kernels._compiler())  # the same key for the same sources and compiler
