import shutil

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from conftest import tiny_bert_config, toy_reviews
from mxnet import gluon

from bert_tutorial import BERTClassifier
from bert_tutorial.checkpoint import latest_checkpoint
from bert_tutorial.recipes.sentiment_data import sentiment_loader
from bert_tutorial.tutorial.train import train_loop


def _setup(tiny_bert, tiny_vocab, n_train=256, n_test=64, batch_size=16, seed=0):
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    train = sentiment_loader(toy_reviews(n_train, seed=1), tok, tiny_vocab, 16, batch_size, shuffle=True)
    test = sentiment_loader(toy_reviews(n_test, seed=2), tok, tiny_vocab, 16, batch_size)
    net = BERTClassifier(tiny_bert, 2)
    net.classifier.initialize(mx.init.Normal(0.02))
    return net, train, test


def _params(net):
    return {k: v.data().asnumpy().copy() for k, v in net._collect_params_with_prefix().items()}


def test_learns_a_toy_task(tiny_bert, tiny_vocab, capsys):
    net, train, test = _setup(tiny_bert, tiny_vocab)
    records = []
    history = train_loop(net, train, test, 4, 3e-3, mx.cpu(), gluon.loss.SoftmaxCELoss(), progress=False,
                         log_interval=5, callback=records.append)
    ends = [r for r in records if 'test_accuracy' in r]
    assert [r['epoch'] for r in ends] == [1.0, 2.0, 3.0, 4.0]
    assert [r['test_accuracy'] for r in ends] == [h['test_accuracy'] for h in history]
    assert len(records) > len(ends) and all(0 < r['epoch'] <= 4 for r in records)
    assert history[-1]['train_loss'] < history[0]['train_loss'] * 0.7
    assert history[-1]['test_accuracy'] > 0.85
    assert all(h['samples_per_second'] > 0 for h in history)
    out = capsys.readouterr().out
    assert 'Batch 0 Accuracy' in out and "Epoch 3, Accuracy ('accuracy', " in out and 'Test Accuracy' in out


def test_same_seed_same_run_and_resume_equals_uninterrupted(tiny_bert, tiny_vocab, tmp_path):
    runs = {}
    # Identical starting points (dropout on), built from one set of weights.
    base_net, train, test = _setup(_clone_bert(tiny_vocab), tiny_vocab, n_train=96, batch_size=16)
    init = tmp_path / 'init.params'
    base_net.save_parameters(str(init))

    def fresh():
        net, _, _ = _setup(_clone_bert(tiny_vocab), tiny_vocab, n_train=96, batch_size=16)
        net.load_parameters(str(init))
        return net

    loss = gluon.loss.SoftmaxCELoss()
    for name in ('a', 'b'):
        net = fresh()
        hist = train_loop(net, train, test, 2, 1e-3, mx.cpu(), loss, progress=False, seed=7)
        runs[name] = (_params(net), [h['train_loss'] for h in hist])
    for key in runs['a'][0]:
        np.testing.assert_array_equal(runs['a'][0][key], runs['b'][0][key])
    assert runs['a'][1] == runs['b'][1]

    net = fresh()  # interrupted after epoch 1 ...
    train_loop(net, train, test, 2, 1e-3, mx.cpu(), loss, progress=False, seed=7, checkpoint_dir=tmp_path / 'r')
    ckpt = latest_checkpoint(tmp_path / 'r')
    first = sorted((tmp_path / 'r' / 'checkpoints').glob('step-*'))[0]
    assert ckpt != first
    shutil.rmtree(ckpt)  # ... as if killed after epoch 1
    net = fresh()
    hist = train_loop(net, train, test, 2, 1e-3, mx.cpu(), loss, progress=False, seed=7,
                      checkpoint_dir=tmp_path / 'r', resume=True)
    assert [h['train_loss'] for h in hist] == runs['a'][1]
    resumed = _params(net)
    # Bit for bit: the resumed run replays the same operations on the same float32 values (a checkpoint stores the
    # weights and Adam's states exactly, the generators are reseeded from (seed, step)).
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], runs['a'][0][key])


def _clone_bert(tiny_vocab, dropout=0.1):
    from bert_tutorial import build_encoder
    return build_encoder(tiny_bert_config(len(tiny_vocab), dropout=dropout))


def test_mid_epoch_checkpoint_resumes_exactly(tiny_vocab, tmp_path):
    loss = gluon.loss.SoftmaxCELoss()
    net, train, test = _setup(_clone_bert(tiny_vocab), tiny_vocab, n_train=96, batch_size=16)
    init = tmp_path / 'init.params'
    net.save_parameters(str(init))
    whole = train_loop(net, train, test, 1, 1e-3, mx.cpu(), loss, progress=False, seed=3)
    full = _params(net)

    net, _, _ = _setup(_clone_bert(tiny_vocab), tiny_vocab)
    net.load_parameters(str(init))
    train_loop(net, train, test, 1, 1e-3, mx.cpu(), loss, progress=False, seed=3, checkpoint_dir=tmp_path / 'm',
               checkpoint_every=2)
    ckpts = sorted((tmp_path / 'm' / 'checkpoints').glob('step-*'))
    for later in ckpts[ckpts.index([c for c in ckpts if c.name != 'step-00000006'][-1]) + 1:]:
        shutil.rmtree(later)  # as if killed in the middle of the epoch
    net, _, _ = _setup(_clone_bert(tiny_vocab), tiny_vocab)
    net.load_parameters(str(init))
    resumed = train_loop(net, train, test, 1, 1e-3, mx.cpu(), loss, progress=False, seed=3,
                         checkpoint_dir=tmp_path / 'm', resume=True)
    for key, value in _params(net).items():  # bit for bit: a replay (see the test above)
        np.testing.assert_array_equal(value, full[key])
    # The epoch's figures count the batches before the checkpoint too: those of the uninterrupted run.
    for key in ('train_loss', 'train_accuracy', 'test_accuracy'):
        assert resumed[0][key] == pytest.approx(whole[0][key], rel=1e-12), key  # sums resumed mid-way: float64


def test_non_finite_loss_stops_or_skips(tiny_bert, tiny_vocab, tmp_path):
    net, train, test = _setup(tiny_bert, tiny_vocab, n_train=64)
    before = _params(net)

    def nan_loss(out, label):
        return gluon.loss.SoftmaxCELoss()(out, label) * np.nan

    with pytest.raises(FloatingPointError, match='non-finite loss at step 0 \\(epoch 0, batch 0\\)'):
        train_loop(net, train, test, 1, 1e-3, mx.cpu(), nan_loss, progress=False, checkpoint_dir=tmp_path)
    assert latest_checkpoint(tmp_path) is None
    train_loop(net, train, test, 1, 1e-3, mx.cpu(), nan_loss, progress=False, skip_nonfinite=True)
    for key, value in _params(net).items():
        np.testing.assert_array_equal(value, before[key])


def test_two_contexts_match_one(tiny_vocab, tmp_path):
    """Data-parallel over two CPU contexts gives the parameters of one context on the same batches."""
    loss = gluon.loss.SoftmaxCELoss()
    results = []
    init = tmp_path / 'init.params'
    for ctx in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        net, train, test = _setup(_clone_bert(tiny_vocab, dropout=0.0), tiny_vocab, n_train=64, batch_size=16)
        if results:
            net.load_parameters(str(init))
        else:
            net.save_parameters(str(init))
        net.collect_params().reset_ctx(ctx)
        # SGD without clipping: an update proportional to the gradient, so a wrong scale of the gradients summed
        # over the contexts shows (Adam and clipping would divide it out), and round-off is not amplified
        train_loop(net, train, test, 1, 0.1, ctx, loss, progress=False, seed=1, optimizer='sgd', clip=None)
        results.append(_params(net))
    start = {k: v.asnumpy() for k, v in mx.nd.load(str(init)).items()}
    assert sum(not np.allclose(results[0][k], start[k], rtol=0, atol=1e-4) for k in start) > len(start) // 2
    for key, value in results[0].items():
        # Two contexts sum each half-batch's gradient and then the halves: float32 round-off of a reordered sum,
        # ~1e-7 of the gradient, times lr = 0.1 and 4 steps: ~1e-8 in the weights (measured 2e-8); 1e-6 is far
        # above that and far below the steps (most tensors move by more than 1e-4, checked above).
        np.testing.assert_allclose(results[1][key], value, rtol=0, atol=1e-6)


def test_bad_arguments(tiny_bert, tiny_vocab):
    net, train, test = _setup(tiny_bert, tiny_vocab, n_train=32)
    loss = gluon.loss.SoftmaxCELoss()
    with pytest.raises(ValueError, match='num_epoch must be an integer >= 1, got 0'):
        train_loop(net, train, test, 0, 1e-3, mx.cpu(), loss)
    with pytest.raises(ValueError, match='ctx must be an mxnet Context'):
        train_loop(net, train, test, 1, 1e-3, 'cpu', loss)
    with pytest.raises(ValueError, match='resume=True needs checkpoint_dir'):
        train_loop(net, train, test, 1, 1e-3, mx.cpu(), loss, resume=True)


def _clip_grad_global_norm(params, clip, on_kernels):
    """GluonNLP's clip_grad_global_norm; on the C++ kernels, its formula on their gradient norm (bert_sum_sq, which
    clipped_update takes there: FusedBERTAdam's global_norm)."""
    if not on_kernels:
        return nlp.utils.clip_grad_global_norm(params, clip)
    from bert_tutorial.speed.optimizer import grad_global_norm
    scale = 1 / mx.nd.maximum(mx.nd.ones((1,)), grad_global_norm(params) / clip)
    for p in params:
        p.grad()[:] *= scale


@pytest.mark.parametrize('optimizer', ['sgd', 'bertadam', 'FusedBERTAdam'])
@pytest.mark.parametrize('clip', [None, 2.0 ** -10, 2.0 ** 10])
def test_clipped_update_equals_clipping_the_gradients(clip, optimizer):
    """The clipping factor applied through the optimizer's rescaling gives the update that rewriting the
    gradients with GluonNLP's clip_grad_global_norm gives. The limits are powers of two (2**-10 clips every step,
    2**10 none), so that norm / clip is exact in float32 and both ways scale by the same float32 number,
    fl32(clip / norm) (see test_train_loop_with_seven_arguments_is_the_tutorials_recipe)."""
    from bert_tutorial.loop import clipped_update, make_trainer
    from bert_tutorial.speed import FusedBERTAdam

    lr, steps, results = 1e-2, 3, []
    for ours in (True, False):
        mx.random.seed(3)
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Dense(8, activation='tanh'), gluon.nn.LayerNorm(), gluon.nn.Dense(2))
        net.initialize(mx.init.Normal(0.5))
        # the speed plug-in's optimizer as accelerate() hands it to make_trainer: a callable
        trainer = make_trainer(net, lr, FusedBERTAdam if optimizer == 'FusedBERTAdam' else optimizer)
        params = list(net.collect_params().values())
        x, y = mx.nd.random.normal(shape=(4, 5)), mx.nd.array([0, 1, 1, 0])
        for _ in range(steps):
            with mx.autograd.record():
                loss = gluon.loss.SoftmaxCELoss()(net(x), y).mean()
            loss.backward()
            if ours:
                assert clipped_update(trainer, params, clip, loss.asscalar(), 'test', False)
            else:
                if clip is not None:
                    _clip_grad_global_norm(params, clip, getattr(trainer.optimizer, 'norm_kernel', False))
                trainer.update(1)
        results.append([p.data().asnumpy() for p in params])
    for a, b in zip(*results):
        if optimizer == 'sgd':
            # MXNet's sgd_update rounds (lr * rescale_grad) * grad, against lr * (grad * scale) when the gradients
            # were rewritten: at most 2 float32 ulps (2 * 2**-24) of a step lr * clip / norm * |grad| <= lr * clip,
            # a step; the weights then differ by far less than the values they compute from (no normalisation).
            # Unclipped, both multiply by exactly 1.
            clipped = clip is not None and clip < 1  # 2**10 is above every gradient norm here
            np.testing.assert_allclose(a, b, rtol=0, atol=steps * 2 * 2.0 ** -24 * lr * clip if clipped else 0)
        else:  # Adam's updates take rescale_grad * grad: the same float32 product as the rewritten gradients
            np.testing.assert_array_equal(a, b)


def test_fused_bert_adam_equals_gluonnlp_bert_adam():
    """FusedBERTAdam gives GluonNLP's BERTAdam update, weight decay and gradient rescaling included."""
    from bert_tutorial.speed.optimizer import FusedBERTAdam

    rng = np.random.RandomState(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    weights0 = [rng.normal(size=s).astype('float32') for s in shapes]
    grads = [[rng.normal(size=s).astype('float32') for s in shapes] for _ in range(4)]
    results = []
    for opt in (nlp.optimizer.BERTAdam(learning_rate=1e-2, wd=0.1, epsilon=1e-6),
                FusedBERTAdam(learning_rate=1e-2, wd=0.1, epsilon=1e-6)):
        opt.set_wd_mult({1: 0.0})
        updater = mx.optimizer.get_updater(opt)
        weights = [mx.nd.array(w) for w in weights0]
        for step, step_grads in enumerate(grads):
            opt.rescale_grad = 0.5 if step % 2 else 1.0
            updater(list(range(len(shapes))), [mx.nd.array(g) for g in step_grads], weights)
        results.append([w.asnumpy() for w in weights])
    for ref, ours, w0 in zip(*results, weights0):
        assert np.abs(ref - w0).max() > 1e-3  # the weights moved
        # 4 updates with the given gradients (no feedback): each rounds w - lr * (...) its own way, a few ulps of |w|
        # <= ~4 (2**-21 ~ 5e-7): 1e-5 bounds 4 of them
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert 'fusedbertadam' in mx.optimizer.Optimizer.opt_registry


def test_make_trainer_takes_a_registry_name_or_a_callable(monkeypatch):
    """``make_trainer`` builds MXNet's registered optimizers by name and others (the speed plug-in's) from a
    callable; the plug-in's registry name, before the plug-in is imported, is refused naming the way to get it."""
    from bert_tutorial.loop import make_trainer, update_rule
    from bert_tutorial.speed import FusedBERTAdam

    net = gluon.nn.Dense(2, in_units=3)
    net.initialize()
    assert type(make_trainer(net, 1e-3).optimizer) is nlp.optimizer.BERTAdam
    fused = make_trainer(net, 1e-3, FusedBERTAdam).optimizer
    assert type(fused) is FusedBERTAdam and fused.epsilon == 1e-6 and fused.wd == 0.01
    assert update_rule(FusedBERTAdam) == update_rule('bertadam') == 'bertadam'  # checkpoints of either resume alike
    # 0.5's make_trainer(kernels=...): warns, switches FusedBERTAdam's kernels, and any other optimizer has none
    with pytest.warns(FutureWarning, match=r'make_trainer\(kernels=...\) is deprecated'):
        assert type(make_trainer(net, 1e-3, kernels=False).optimizer) is nlp.optimizer.BERTAdam
    with pytest.warns(FutureWarning):
        assert make_trainer(net, 1e-3, 'fusedbertadam', kernels=False).optimizer.kernels is False
    with pytest.warns(FutureWarning):
        assert make_trainer(net, 1e-3, FusedBERTAdam, kernels=False).optimizer.kernels is False
    monkeypatch.delitem(mx.optimizer.Optimizer.opt_registry, 'fusedbertadam')  # as before speed is imported
    with pytest.raises(ValueError, match=r"'fusedbertadam'.*speed plug-in's; pass optimizer=bert_tutorial.speed"):
        make_trainer(net, 1e-3, 'fusedbertadam')


@pytest.mark.parametrize('option, match', [
    (dict(log_interval=0), 'log_interval must be an integer >= 1, got 0'),
    (dict(checkpoint_every=-1), 'checkpoint_every must be an integer >= 1 or None, got -1'),
    (dict(warmup_ratio=float('nan')), r'warmup_ratio must be 0 or in \[1.2e-38, 1\), got nan'),
    (dict(clip=0.0), 'clip must be a number from 1.2e-38 to 3.4e38, got 0.0'),
])
def test_options_that_would_fail_mid_run_are_refused_at_once(tiny_bert, tiny_vocab, option, match):
    net, train, test = _setup(tiny_bert, tiny_vocab, n_train=32)
    with pytest.raises(ValueError, match=match):
        train_loop(net, train, test, 1, 1e-3, mx.cpu(), gluon.loss.SoftmaxCELoss(), **option)
    with pytest.raises(ValueError, match='lr must be a number from 1.2e-38 to 3.4e38, got nan'):
        train_loop(net, train, test, 1, float('nan'), mx.cpu(), gluon.loss.SoftmaxCELoss())
