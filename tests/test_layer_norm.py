"""MatmulLayerNorm against MXNet's LayerNorm: values, gradients, and the swap inside a classifier."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from bert_tutorial import BERTClassifier, MatmulLayerNorm, use_matmul_layer_norm


def _run(block, x, dy):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        y = block(x)
    y.backward(dy)
    return y.asnumpy(), x.grad.asnumpy(), block.gamma.grad().asnumpy().copy(), block.beta.grad().asnumpy().copy()


@pytest.mark.parametrize('hybridize', [False, True])
@pytest.mark.parametrize('shape', [(3, 5, 16), (7, 16)])
def test_matches_layer_norm(shape, hybridize):
    rng = np.random.RandomState(0)
    ref = gluon.nn.LayerNorm(epsilon=1e-12, in_channels=shape[-1])
    ref.initialize()
    ref.gamma.set_data(nd.array(rng.uniform(0.5, 1.5, shape[-1])))
    ref.beta.set_data(nd.array(rng.normal(size=shape[-1])))
    ours = MatmulLayerNorm(epsilon=1e-12, in_channels=shape[-1], prefix=ref.prefix, params=ref.params)
    assert ours.gamma is ref.gamma
    if hybridize:
        ours.hybridize(static_alloc=True)
    x, dy = nd.array(rng.normal(2.0, 3.0, shape)), nd.array(rng.normal(size=shape))
    for a, b, what in zip(_run(ref, x, dy), _run(ours, x, dy), ('output', 'input grad', 'gamma grad', 'beta grad')):
        # reductions as FullyConnected against a ones vector (another order of the same sums of 16 values ~N(2, 3)):
        # round-off ~16 * 2**-24 relative, not amplified (var ~9 >> eps)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=what)


def test_swap_inside_a_classifier(tiny_bert, tmp_path):
    net = BERTClassifier(tiny_bert, 2, dropout=0.0)
    net.initialize(mx.init.Normal(0.02))
    ids, segments, valid = nd.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]]), nd.zeros((2, 5)), nd.array([4, 3])
    before = net(ids, segments, valid).asnumpy()
    net.save_parameters(str(tmp_path / 'before.params'))
    n_norms = sum(1 for b in _blocks(net) if type(b) is gluon.nn.LayerNorm)
    assert n_norms == 3  # the embedding's and two per encoder layer
    assert use_matmul_layer_norm(net) == n_norms
    assert not any(type(b) is gluon.nn.LayerNorm for b in _blocks(net))
    net.hybridize(static_alloc=True)
    # the same LayerNorm values (above) inside a 1-layer classifier: round-off only
    np.testing.assert_allclose(net(ids, segments, valid).asnumpy(), before, rtol=1e-4, atol=1e-5)
    # the saved file is the one MXNet's LayerNorm writes: same names, same values
    net.save_parameters(str(tmp_path / 'after.params'))
    saved = [nd.load(str(tmp_path / f'{name}.params')) for name in ('before', 'after')]
    assert sorted(saved[0]) == sorted(saved[1])
    for key in saved[0]:
        np.testing.assert_array_equal(saved[0][key].asnumpy(), saved[1][key].asnumpy())


def test_needs_initialized_parameters():
    block = gluon.nn.HybridSequential()
    block.add(gluon.nn.LayerNorm())
    block.initialize()
    with pytest.raises(ValueError, match='initialize the parameters'):
        use_matmul_layer_norm(block)


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)
