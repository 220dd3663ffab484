"""The optimizer's C++ kernels: ``bert_adam_update`` against MXNet's ``adamw_update`` (GluonNLP's BERTAdam),
``bert_sum_sq`` against float64 numpy, ``FusedBERTAdam`` and ``grad_global_norm`` on them and without them."""
import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mxnet import gluon, nd

from bert_tutorial.speed import kernels, optimizer
from bert_tutorial.speed.optimizer import KERNEL_AGGREGATE, grad_global_norm

needs_kernels = pytest.mark.usefixtures('kernels_loaded')


def _adam_inputs(shapes, seed):
    rng = np.random.RandomState(seed)
    return [(rng.normal(size=s), rng.normal(size=s) * 3, rng.normal(size=s) * 0.1, rng.uniform(0, 2, size=s))
            for s in shapes]


def _reference_adam(inputs, lrs, wds, **kwargs):
    """MXNet's adamw_update, as GluonNLP's BERTAdam calls it (lr 1, eta = the learning rate)."""
    out = []
    for (w, g, m, v), lr, wd in zip(inputs, lrs, wds):
        w, g, m, v = (nd.array(a) for a in (w, g, m, v))
        rescale = nd.array([kwargs['rescale_grad']])
        extra = {'clip_gradient': kwargs['clip_gradient']} if kwargs['clip_gradient'] >= 0 else {}
        nd.contrib.adamw_update(w, g, m, v, rescale, out=w, lr=1, eta=lr, wd=wd, beta1=kwargs['beta1'],
                                beta2=kwargs['beta2'], epsilon=kwargs['epsilon'], **extra)
        out.append([a.asnumpy() for a in (w, m, v)])
    return out


def _kernel_adam(inputs, lrs, wds, **kwargs):
    arrays = [[nd.array(a) for a in t] for t in inputs]
    flat = [a for t in arrays for a in t]
    nd.bert_adam_update(*flat, out=[t[0] for t in arrays], num_tensors=len(arrays),
                        lrs=','.join(repr(x) for x in lrs), wds=','.join(repr(x) for x in wds), **kwargs)
    return [[t[0].asnumpy(), t[2].asnumpy(), t[3].asnumpy()] for t in arrays]


@needs_kernels
@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 70), min_size=1, max_size=3), min_size=1, max_size=6),
       rescale=st.sampled_from([1.0, 0.5, 1 / 3]), clip=st.sampled_from([-1.0, 0.5, 4.0]),
       beta1=st.sampled_from([0.9, 0.0]), seed=st.integers(0, 2 ** 16))
def test_adam_update_equals_adamw_update(shapes, rescale, clip, beta1, seed):
    """Weights, means and variances equal MXNet's adamw_update bit for bit (the same float32 operations in the
    same order), with gradient rescaling, clipping and per-tensor learning rates and weight decay."""
    inputs = _adam_inputs([tuple(s) for s in shapes], seed)
    rng = np.random.RandomState(seed + 1)
    lrs = [float(x) for x in rng.choice([5e-5, 1e-3, 0.1], len(shapes))]
    wds = [float(x) for x in rng.choice([0.0, 0.01], len(shapes))]
    kwargs = dict(beta1=beta1, beta2=0.999, epsilon=1e-6, rescale_grad=rescale, clip_gradient=clip)
    for ref, ours, (w0, *_) in zip(_reference_adam(inputs, lrs, wds, **kwargs),
                                   _kernel_adam(inputs, lrs, wds, **kwargs), inputs):
        for a, b in zip(ref, ours):
            np.testing.assert_array_equal(b, a)
        assert not np.array_equal(ours[0], w0.astype(np.float32))  # the weight moved


@needs_kernels
def test_adam_update_on_large_tensors_across_threads():
    """Tensors big enough for the OpenMP split (the kernel's threshold is 32768 elements in all)."""
    inputs = _adam_inputs([(300, 384), (7,), (1536, 33)], 3)
    kwargs = dict(beta1=0.9, beta2=0.999, epsilon=1e-6, rescale_grad=0.25, clip_gradient=-1.0)
    for ref, ours in zip(_reference_adam(inputs, [1e-3] * 3, [0.01, 0.0, 0.01], **kwargs),
                         _kernel_adam(inputs, [1e-3] * 3, [0.01, 0.0, 0.01], **kwargs)):
        for a, b in zip(ref, ours):
            np.testing.assert_array_equal(b, a)


@needs_kernels
def test_adam_update_bad_input_is_an_error():
    w, g, m, v = (nd.ones((3,)) for _ in range(4))
    with pytest.raises(mx.MXNetError, match='lrs and wds need num_tensors numbers each'):
        nd.bert_adam_update(w, g, m, v, out=w, num_tensors=1, lrs='0.1,0.2', wds='0')
    with pytest.raises(mx.MXNetError, match='lrs and wds need num_tensors numbers each'):
        nd.bert_adam_update(w, g, m, v, out=w, num_tensors=1, lrs='fast', wds='0')
    with pytest.raises(mx.MXNetError, match="tensor 0: gradient, mean and var need the weight's shape"):
        nd.bert_adam_update(w, nd.ones((4,)), m, v, out=w, num_tensors=1, lrs='0.1', wds='0')
    with pytest.raises(mx.MXNetError, match='must be float32'):
        nd.bert_adam_update(w, g.astype('float64'), m, v, out=w, num_tensors=1, lrs='0.1', wds='0')
    with pytest.raises(mx.MXNetError, match='num_tensors must be an integer >= 1'):
        nd.bert_adam_update(w, g, m, v, num_tensors=0, lrs='0.1', wds='0')


@needs_kernels
@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=3), min_size=1, max_size=5),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), seed=st.integers(0, 2 ** 16))
def test_sum_sq_equals_float64(shapes, scale, seed):
    rng = np.random.RandomState(seed)
    arrays = [(rng.normal(size=tuple(s)) * scale).astype(np.float32) for s in shapes]
    ours = nd.bert_sum_sq(*[nd.array(a) for a in arrays], num_arrays=len(arrays)).asnumpy()
    expected = [float((a.astype(np.float64) ** 2).sum()) for a in arrays]
    # float32 partial sums over 4096-element blocks (16 lanes of 256 terms), float64 across blocks
    np.testing.assert_allclose(ours, expected, rtol=5e-6)


@needs_kernels
def test_sum_sq_of_an_embedding_sized_gradient():
    """A 30522 x 384 gradient: MXNet's multi_sum_sq accumulates in float32 and drifts; ours stays within float32
    rounding of the float64 sum."""
    g = np.random.RandomState(0).normal(size=(30522, 384)).astype(np.float32)
    exact = float((g.astype(np.float64) ** 2).sum())
    ours = float(nd.bert_sum_sq(nd.array(g), num_arrays=1).asscalar())
    mxnet = float(nd.multi_sum_sq(nd.array(g), num_arrays=1).asscalar())
    assert abs(ours - exact) / exact < 5e-6
    assert abs(mxnet - exact) / exact > 1e-4  # why the kernel: if MXNet gets this right, the comment is stale


def _net(seed):
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Embedding(50, 16), gluon.nn.Dense(16, activation='tanh', flatten=False, in_units=16),
            gluon.nn.LayerNorm(in_channels=16), gluon.nn.Dense(3, in_units=5 * 16))
    net.initialize(mx.init.Normal(0.5))
    return net


def _train(opt_name, opt_args, steps=4):
    net = _net(7)
    trainer = gluon.Trainer(net.collect_params(), opt_name, opt_args, update_on_kvstore=False)
    x, y = nd.array(np.random.RandomState(1).randint(0, 50, (8, 5))), nd.array([0, 1, 2, 0, 1, 2, 0, 1])
    for step in range(steps):
        with mx.autograd.record():
            loss = gluon.loss.SoftmaxCELoss()(net(x), y).mean()
        loss.backward()
        trainer.update(1.0 + step)  # changing rescale_grad
    return trainer, [p.data().asnumpy() for p in net.collect_params().values()]


@needs_kernels
def test_fused_bert_adam_on_the_kernel_equals_bert_adam(monkeypatch):
    """A Trainer on FusedBERTAdam (one bert_adam_update call a step) gives the weights of GluonNLP's BERTAdam, wd
    multipliers included: bit for bit with BERTAdam's adamw_update path, within round-off of its default
    multi_adamw_update path (which rounds differently)."""
    monkeypatch.setenv('BERT_TUTORIAL_KERNEL_CHOICE', 'all')  # the kernel, whether or not it is faster here
    args = {'learning_rate': 1e-2, 'wd': 0.1, 'epsilon': 1e-6}
    trainer, ours = _train('fusedbertadam', args)
    assert trainer._optimizer.kernels and trainer._optimizer.aggregate_num == KERNEL_AGGREGATE
    _, multi = _train('bertadam', args)
    monkeypatch.setenv('MXNET_OPTIMIZER_AGGREGATION_SIZE', '1')  # BERTAdam then calls adamw_update
    _, single = _train('bertadam', args)
    start = [p.data().asnumpy() for p in _net(7).collect_params().values()]
    for a, b, c, w0 in zip(single, multi, ours, start):
        np.testing.assert_array_equal(c, a)
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-5)
        assert not np.allclose(c, w0)  # trained


def test_fused_bert_adam_without_the_kernels_equals_bert_adam(monkeypatch):
    monkeypatch.setattr(optimizer, 'load_kernels', lambda: False)
    args = {'learning_rate': 1e-2, 'wd': 0.1, 'epsilon': 1e-6}
    _, ref = _train('bertadam', args)
    trainer, ours = _train('fusedbertadam', args)
    assert not trainer._optimizer.kernels and trainer._optimizer.aggregate_num == 0
    for a, b in zip(ref, ours):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)  # adam_update on w * (1 - lr * wd) rounds apart


@pytest.mark.parametrize('on_kernels', [True, False])
def test_grad_global_norm_equals_gluonnlp(on_kernels, monkeypatch):
    if on_kernels and not kernels.load_kernels():
        pytest.skip('no C++ kernels on this machine')
    if not on_kernels:
        monkeypatch.setattr(optimizer, 'load_kernels', lambda: False)
    net = _net(3)
    net[2].gamma.grad_req = 'null'  # skipped by both
    with mx.autograd.record():
        loss = net(nd.array([[1, 2, 3, 4, 5], [4, 5, 6, 7, 8]])).sum()
    loss.backward()
    params = list(net.collect_params().values())
    ours = grad_global_norm(params)
    assert ours.shape == (1,)
    exact = np.sqrt(sum(float((p.grad().asnumpy().astype(np.float64) ** 2).sum())
                        for p in params if p.grad_req != 'null'))
    np.testing.assert_allclose(ours.asscalar(), nlp.utils.grad_global_norm(params).asscalar(), rtol=1e-5)
    np.testing.assert_allclose(ours.asscalar(), exact, rtol=1e-5)
