"""bert_fc (dense layers on OpenBLAS's sgemm) against MXNet's FullyConnected and float64 numpy, KernelDense
and the attention cell's projection swapped into a classifier, and the path without a BLAS."""
import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mxnet import gluon, nd
from test_kernels import INPUTS, _blocks, _classifier, _grads, _op_grads, _ops, _same_as_before, _swap_in_new_process

from bert_tutorial.speed import kernels
from bert_tutorial.speed.kernel_ops import KernelDense, standard_ops, use_kernels


@pytest.fixture(scope='module')
def dense_loaded(kernels_loaded):
    if kernels.default_blas() is None:
        pytest.skip("neither scipy-openblas32 nor numpy ships an OpenBLAS: bert_fc has no BLAS (the fallback test "
                    "covers it)")
    assert kernels.dense_available(), 'bert_fc did not run (see the log)'


needs_dense = pytest.mark.usefixtures('dense_loaded')


def _check_fc(shape, units, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(units, shape[-1])).astype(np.float32)
    b = rng.normal(size=(units,)).astype(np.float32)
    dy = rng.normal(size=shape[:-1] + (units,)).astype(np.float32)
    ref = _op_grads(lambda *a: nd.FullyConnected(*a, num_hidden=units, flatten=False), (x, w, b), dy)
    ours = _op_grads(lambda *a: nd.bert_fc(*a), (x, w, b), dy)
    x64, w64, dy64 = (a.astype(np.float64).reshape(-1, a.shape[-1]) for a in (x, w, dy))
    exact = [(x64 @ w64.T + b).reshape(dy.shape), (dy64 @ w64).reshape(x.shape), dy64.T @ x64, dy64.sum(0)]
    for what, a, o, e in zip(('output', 'data grad', 'weight grad', 'bias grad'), ref, ours, exact):
        assert o.shape == a.shape and o.dtype == np.float32, what
        # float32 round-off of sums of in_units, units or rows products
        tolerance = dict(rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(e).max())), err_msg=what)
        np.testing.assert_allclose(o, e, **tolerance)
        np.testing.assert_allclose(a, e, **tolerance)


@needs_dense
@pytest.mark.parametrize('shape, units', [((33, 32, 384), 1152), ((1056, 1536), 384), ((1, 1), 1), ((5, 1), 3),
                                          ((2, 3, 7), 1), ((300, 17), 33)])
def test_fc_matches_mxnet(shape, units):
    _check_fc(shape, units, 0)


@needs_dense
@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), units=st.integers(1, 70),
       seed=st.integers(0, 2 ** 16))
def test_fc_matches_mxnet_on_any_shape(shape, units, seed):
    _check_fc(tuple(shape), units, seed)


@needs_dense
def test_fc_bad_input_is_an_error():
    with pytest.raises(mx.MXNetError, match=r'bert_fc: needs data \(..., in\), weight \(out, in\) and bias'):
        nd.bert_fc(nd.ones((2, 3)), nd.ones((4, 5)), nd.ones((4,))).wait_to_read()
    with pytest.raises(mx.MXNetError, match=r'bert_fc: needs data'):
        nd.bert_fc(nd.ones((2, 3)), nd.ones((4, 3)), nd.ones((5,))).wait_to_read()
    with pytest.raises(mx.MXNetError, match='bert_fc: data, weight and bias must be float32'):
        nd.bert_fc(nd.ones((2, 3), dtype='float64'), nd.ones((4, 3)), nd.ones((4,))).wait_to_read()


@needs_dense
@pytest.mark.parametrize('hybridize', [False, True])
def test_dense_swap_inside_a_classifier(tiny_vocab, hybridize):
    from gluonnlp.model.bert import DotProductSelfAttentionCell

    net = _classifier(tiny_vocab, dropout=0.1)
    before, before_grads = _grads(net)
    names = sorted(net.collect_params())
    dense = [b for b in _blocks(net) if type(b) is gluon.nn.Dense and not b._flatten]
    assert dense  # the encoder's projections and feed-forward layers
    counts = use_kernels(net, layer_norm=False, dropout=False, dense=True)
    cells = sum(type(b).__name__ == 'KernelSelfAttentionCell' for b in _blocks(net))
    assert counts['dense'] == len(dense) + cells and cells >= 1
    assert sum(type(b) is KernelDense for b in _blocks(net)) == len(dense)
    assert not any(type(b) is DotProductSelfAttentionCell for b in _blocks(net))
    assert sorted(net.collect_params()) == names
    _same_as_before(net, before, before_grads, hybridize)
    graph = _ops(net(*[mx.sym.var(n) for n in ('data0', 'data1', 'data2')]))
    assert 'bert_fc' in graph
    with standard_ops(net):
        graph = _ops(net(*[mx.sym.var(n) for n in ('data0', 'data1', 'data2')]))
        assert not any(op.startswith('bert_') for op in graph) and 'FullyConnected' in graph
        np.testing.assert_allclose(net(*INPUTS).asnumpy(), before, rtol=1e-5, atol=1e-6)
    assert sum(type(b) is KernelDense for b in _blocks(net)) == len(dense)  # back after the with


@needs_dense
def test_dense_swap_keeps_the_activation():
    dense = gluon.nn.Dense(6, activation='tanh', flatten=False, in_units=4)
    dense.initialize()
    x = nd.random.normal(shape=(2, 3, 4))
    expected = dense(x).asnumpy()
    holder = gluon.nn.HybridSequential()
    holder.add(dense)
    assert use_kernels(holder, layer_norm=False, dropout=False, dense=True)['dense'] == 1
    assert type(holder[0]) is KernelDense and holder[0].act is dense.act
    np.testing.assert_allclose(holder(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)


@needs_dense
def test_dense_swap_refuses_gradient_accumulation():
    holder = gluon.nn.HybridSequential()
    holder.add(gluon.nn.Dense(3, flatten=False, in_units=2))
    holder.initialize()
    holder.collect_params().setattr('grad_req', 'add')
    with pytest.raises(ValueError, match="grad_req 'add' .* needs MXNet's FullyConnected"):
        use_kernels(holder, layer_norm=False, dropout=False, dense=True)


def test_without_a_blas_the_dense_layers_stay_mxnets(tmp_path):
    """BERT_TUTORIAL_BLAS naming no usable library: one log line, dense=True swaps nothing, the model runs."""
    if not kernels.kernels_enabled() or kernels._compiler() is None:
        pytest.skip('no C++ compiler, or BERT_TUTORIAL_KERNELS=off')
    done = _swap_in_new_process(tmp_path, 'use_kernels(net, dense=True)["dense"]',
                                BERT_TUTORIAL_BLAS=str(tmp_path / 'no-blas.so'))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['0', '(1, 2)']
    lines = [line for line in done.stderr.splitlines() if 'no bert_fc' in line]
    assert len(lines) == 1 and f'cannot open {tmp_path / "no-blas.so"}' in lines[0], done.stderr
    assert 'bert_kernels.cc' not in lines[0] and '[0]' not in lines[0]  # one clean line, not MXNet's trace
