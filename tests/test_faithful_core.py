"""The tutorial's blocks, classes and train_loop, pinned without the tutorial's code.

The reference below is written from the tutorial's description in plain ``nd`` operations: learned positions,
attention without an output projection, scores divided by sqrt(units / num_heads), GluonNLP's masked softmax
(masked scores set to -1e18, weights multiplied by the mask), GELU, ``LayerNorm`` with epsilon 1e-5. Parameter
files are written the way ``save_parameters`` writes them: ``nd.save`` of a dict keyed by structural names.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from conftest import tiny_bert_config, toy_reviews
from mxnet import autograd, gluon, nd

from bert_tutorial import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier, train_loop
from bert_tutorial.loop import lr_schedule
from bert_tutorial.recipes.sentiment_data import sentiment_loader
from bert_tutorial.utils import EncoderBlock, MultiHeadAttention

VOCAB, UNITS, HIDDEN, HEADS, LAYERS, MAX_LEN = 40, 12, 20, 3, 2, 30


def encoder_names(num_layers):
    names = ['segment_embed.weight', 'word_embed.weight', 'pos_encoding.embed.weight']
    for i in range(num_layers):
        b = f'blks.{i}.'
        names += [b + 'attention.W_q.weight', b + 'attention.W_k.weight', b + 'attention.W_v.weight',
                  b + 'add_1.norm.gamma', b + 'add_1.norm.beta', b + 'ffn.ffn_1.weight', b + 'ffn.ffn_1.bias',
                  b + 'ffn.ffn_2.weight', b + 'ffn.ffn_2.bias', b + 'add_2.norm.gamma', b + 'add_2.norm.beta']
    return names


def encoder_shapes(num_layers):
    shapes = {'segment_embed.weight': (2, UNITS), 'word_embed.weight': (VOCAB, UNITS),
              'pos_encoding.embed.weight': (MAX_LEN, UNITS)}
    for name in encoder_names(num_layers)[3:]:
        if name.endswith(('W_q.weight', 'W_k.weight', 'W_v.weight')):
            shapes[name] = (UNITS, UNITS)
        elif 'ffn_1' in name:
            shapes[name] = (HIDDEN, UNITS) if name.endswith('weight') else (HIDDEN,)
        elif 'ffn_2' in name:
            shapes[name] = (UNITS, HIDDEN) if name.endswith('weight') else (UNITS,)
        else:
            shapes[name] = (UNITS,)
    return shapes


def random_params(shapes, seed):
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in shapes.items():
        scale = 0.1 if name.endswith(('beta', 'bias')) else 0.5
        base = 1.0 if name.endswith('gamma') else 0.0
        out[name] = nd.array(base + scale * rng.normal(size=shape))
    return out


# ---- the reference, from the description --------------------------------------------------------------------

def ref_layer_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / nd.sqrt(var + eps) * gamma + beta


def ref_gelu(x):
    return 0.5 * x * (1 + nd.erf(x / math.sqrt(2)))


def ref_dense(x, w, b=None):
    y = nd.dot(x, w, transpose_b=True)
    return y if b is None else y + b


def ref_attention(X, p, prefix, num_heads, mask):
    """Self-attention of ``X`` (batch, T, units): per head, softmax(q k^T / sqrt(units/heads)) v, heads concatenated."""
    B, T, units = X.shape
    d = units // num_heads
    q, k, v = (ref_dense(X, p[prefix + f'attention.W_{n}.weight']) for n in 'qkv')
    heads = []
    for h in range(num_heads):
        sl = slice(h * d, (h + 1) * d)
        scores = nd.batch_dot(q[:, :, sl], k[:, :, sl], transpose_b=True) / math.sqrt(d)
        if mask is None:
            weights = nd.softmax(scores, axis=-1)
        else:
            weights = nd.softmax(nd.where(mask, scores, -1e18 * nd.ones_like(scores)), axis=-1) * mask
        heads.append(nd.batch_dot(weights, v[:, :, sl]))
    return nd.concat(*heads, dim=2)


def ref_encoder(p, words, segments, mask, num_layers=LAYERS, num_heads=HEADS):
    T = words.shape[1]
    X = (nd.take(p['word_embed.weight'], words) + nd.take(p['segment_embed.weight'], segments)
         + p['pos_encoding.embed.weight'][:T].expand_dims(0))
    for i in range(num_layers):
        b = f'blks.{i}.'
        Y = ref_layer_norm(ref_attention(X, p, b, num_heads, mask) + X, p[b + 'add_1.norm.gamma'],
                           p[b + 'add_1.norm.beta'])
        F = ref_dense(ref_gelu(ref_dense(Y, p[b + 'ffn.ffn_1.weight'], p[b + 'ffn.ffn_1.bias'])),
                      p[b + 'ffn.ffn_2.weight'], p[b + 'ffn.ffn_2.bias'])
        X = ref_layer_norm(F + Y, p[b + 'add_2.norm.gamma'], p[b + 'add_2.norm.beta'])
    return X


# ---- tests -------------------------------------------------------------------------------------------------

def test_parameter_names_are_the_tutorials():
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, LAYERS, 0.1, max_len=MAX_LEN)
    assert sorted(enc._collect_params_with_prefix()) == sorted(encoder_names(LAYERS))
    ns = NSClassifier(UNITS)
    assert sorted(ns._collect_params_with_prefix()) == ['classifier.0.bias', 'classifier.0.weight',
                                                        'classifier.1.bias', 'classifier.1.weight']
    mlm = MLMDecoder(VOCAB, UNITS)
    assert sorted(mlm._collect_params_with_prefix()) == ['decoder.0.bias', 'decoder.0.weight', 'decoder.2.beta',
                                                         'decoder.2.gamma', 'decoder.3.bias', 'decoder.3.weight']
    # The tutorial's default max_len of PositionalEncoding: 1000 positions.
    assert BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, 1, 0.1).pos_encoding.embed.weight.shape == (1000, UNITS)


def tutorial_batch(seed=0, B=3, T=9):
    rng = np.random.RandomState(seed)
    words = nd.array(rng.randint(0, VOCAB, size=(B, T)))
    segments = nd.array((np.arange(T)[None, :] >= rng.randint(1, T, size=(B, 1))).astype('float32'))
    return words, segments


def tutorial_mask(B=3, T=9, seed=1):
    """A (batch, queries, keys) 0/1 matrix as the tutorial takes it: padding, a causal row pattern, a full row."""
    rng = np.random.RandomState(seed)
    mask = (rng.uniform(size=(B, T, T)) < 0.6).astype('float32')
    mask[:, :, 0] = 1
    mask[0] = np.tril(np.ones((T, T)))
    mask[1, :, 6:] = 0
    return nd.array(mask)


@pytest.mark.parametrize('hybridize', [False, True])
def test_tutorial_parameter_file_loads_and_gives_the_reference_outputs(tmp_path, hybridize):
    params = random_params(encoder_shapes(LAYERS), seed=0)
    path = tmp_path / 'tutorial_encoder.params'
    nd.save(str(path), params)  # what the tutorial's encoder.save_parameters writes
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, LAYERS, dropout=0.0, max_len=MAX_LEN)
    enc.load_parameters(str(path))  # no allow_missing, no ignore_extra
    if hybridize:
        enc.hybridize()
    words, segments = tutorial_batch()
    mask = tutorial_mask()
    for m in (None, mask, None, mask):  # both forms of the graph, and back
        # float32 round-off, the same sums in other orders (the reference is plain nd ops): per layer an output sums
        # at most HIDDEN = 20 products of O(1) values (error <= 20 * 2**-24 ~ 1.2e-6 of the sum of |terms|), LayerNorm
        # renormalises; 2 layers: 1e-5 holds with room
        np.testing.assert_allclose(enc(words, segments, m).asnumpy(), ref_encoder(params, words, segments, m).asnumpy(),
                                   rtol=1e-5, atol=1e-5)


def test_valid_lengths_are_the_padding_mask():
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, LAYERS, dropout=0.0, max_len=MAX_LEN)
    enc.initialize(mx.init.Normal(0.5))
    words, segments = tutorial_batch()
    lengths = np.array([9, 4, 1])
    matrix = nd.array(np.broadcast_to(np.arange(9)[None, None, :] < lengths[:, None, None], (3, 9, 9)))
    expected = enc(words, segments, matrix).asnumpy()
    # the same operators with the mask made two ways: masked weights are exactly 0 either way, so only the order of
    # float32 sums can differ (a few ulps of O(1) values)
    np.testing.assert_allclose(enc(words, segments, nd.array(lengths)).asnumpy(), expected, rtol=1e-6, atol=1e-6)
    enc.hybridize()
    # hybridized, MXNet may reorder the graph's sums: float32 round-off as in the test above (1e-5)
    np.testing.assert_allclose(enc(words, segments, nd.array(lengths)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    # The lower layers accept both forms too.
    att = MultiHeadAttention(UNITS, HEADS, 0.0)
    att.initialize()
    X = nd.random.normal(shape=(3, 9, UNITS))
    # masked weights exactly 0 either way: only float32 round-off of the attention sums (UNITS = 12 terms)
    np.testing.assert_allclose(att(X, X, X, nd.array(lengths)).asnumpy(), att(X, X, X, matrix).asnumpy(), atol=1e-6)
    blk = EncoderBlock(UNITS, HIDDEN, HEADS, 0.0)
    blk.initialize()
    # as above, through the FFN (20 terms) and LayerNorm: round-off only
    np.testing.assert_allclose(blk(X, nd.array(lengths)).asnumpy(), blk(X, matrix).asnumpy(), atol=1e-6)


@pytest.mark.parametrize('mask, match', [
    (nd.ones((3, 9)), r'valid lengths \(batch_size,\) = \(3,\) or a \(batch_size, num_queries, num_keys\)'),
    (nd.ones((3, 9, 8)), r'\(3, 9, 9\) matrix, got shape \(3, 9, 8\)'),
    (nd.ones((3, 9, 9)) * 2, 'mask must hold 0 .masked. or 1 .attended., found 2'),
])
def test_bad_masks_are_refused(mask, match):
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, 1, dropout=0.0, max_len=MAX_LEN)
    enc.initialize()
    with pytest.raises(ValueError, match=match):
        enc(*tutorial_batch(), mask)


def test_positions_past_max_len_are_refused():
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, 1, dropout=0.0, max_len=8)
    enc.initialize()
    with pytest.raises(ValueError, match='words has 9 positions, more than max_len=8'):
        enc(*tutorial_batch(), None)


def test_heads_match_the_reference(tmp_path):
    rng = np.random.RandomState(3)
    ns_params = {'classifier.0.weight': nd.array(rng.normal(size=(UNITS, UNITS))),
                 'classifier.0.bias': nd.array(rng.normal(size=(UNITS,))),
                 'classifier.1.weight': nd.array(rng.normal(size=(1, UNITS))),
                 'classifier.1.bias': nd.array(rng.normal(size=(1,)))}
    mlm_params = {'decoder.0.weight': nd.array(rng.normal(size=(UNITS, UNITS))),
                  'decoder.0.bias': nd.array(rng.normal(size=(UNITS,))),
                  'decoder.2.gamma': nd.array(1 + 0.1 * rng.normal(size=(UNITS,))),
                  'decoder.2.beta': nd.array(0.1 * rng.normal(size=(UNITS,))),
                  'decoder.3.weight': nd.array(rng.normal(size=(VOCAB, UNITS))),
                  'decoder.3.bias': nd.array(rng.normal(size=(VOCAB,)))}
    nd.save(str(tmp_path / 'ns.params'), ns_params)
    nd.save(str(tmp_path / 'mlm.params'), mlm_params)
    ns, mlm = NSClassifier(UNITS), MLMDecoder(VOCAB, UNITS)
    ns.load_parameters(str(tmp_path / 'ns.params'))
    mlm.load_parameters(str(tmp_path / 'mlm.params'))
    X = nd.array(rng.normal(size=(3, 9, UNITS)))
    p = ns_params
    expected = ref_dense(nd.tanh(ref_dense(X[:, 0, :], p['classifier.0.weight'], p['classifier.0.bias'])),
                         p['classifier.1.weight'], p['classifier.1.bias'])
    # dense layers of UNITS = 12 inputs, N(0, 1) weights and inputs: round-off <= 12 * 2**-24 * sum |terms| ~ 1e-5 at
    # the largest sums
    np.testing.assert_allclose(ns(X).asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-5)
    positions = nd.array([[0, 2, 1], [4, 8, 0]])
    picked = nd.stack(X[0, 4], X[2, 8], X[1, 0])
    p = mlm_params
    hidden = ref_layer_norm(ref_gelu(ref_dense(picked, p['decoder.0.weight'], p['decoder.0.bias'])),
                            p['decoder.2.gamma'], p['decoder.2.beta'])
    expected = ref_dense(hidden, p['decoder.3.weight'], p['decoder.3.bias'])
    # the same operators after the gather (gelu, LayerNorm, dense of 12 inputs): round-off as above
    np.testing.assert_allclose(mlm(X, positions).asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-5)


class TutorialBERTClassifier(gluon.nn.Block):
    """The tutorial's BERTClassifier cell (n=9), as printed in the tutorial."""

    def __init__(self, bert, num_classes):
        super().__init__()
        self.bert = bert
        self.classifier = gluon.nn.Dense(num_classes)

    def forward(self, inputs, segment_types, seq_len):
        seq_encoding, cls_encoding = self.bert(inputs, segment_types, seq_len)
        return self.classifier(cls_encoding)


def gluonnlp_bert():
    enc = nlp.model.BERTEncoder(num_layers=1, units=UNITS, hidden_size=HIDDEN, max_length=MAX_LEN, num_heads=HEADS,
                                dropout=0.0)
    return nlp.model.BERTModel(enc, vocab_size=VOCAB, token_type_vocab_size=2, units=UNITS, embed_size=UNITS,
                               use_pooler=True, use_decoder=False, use_classifier=False)


def test_tutorial_classifier_file_loads_into_the_package_classifier(tmp_path):
    theirs = TutorialBERTClassifier(gluonnlp_bert(), 2)
    theirs.initialize(mx.init.Normal(0.3))
    words, segments = tutorial_batch()
    valid = nd.array([9, 5, 2])
    expected = theirs(words, segments, valid).asnumpy()
    theirs.save_parameters(str(tmp_path / 'net.params'))
    ours = BERTClassifier(gluonnlp_bert(), 2)
    ours.load_parameters(str(tmp_path / 'net.params'))
    # the same parameters through the same GluonNLP operators: round-off only (1 layer, 12 units, 20 hidden)
    np.testing.assert_allclose(ours(words, segments, valid).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def tutorial_lr(step_num, lr, num_train_steps, num_warmup_steps=50):
    """The tutorial's schedule, as its train_loop computes it (step_num from 1)."""
    if step_num < num_warmup_steps:
        return lr * step_num / num_warmup_steps
    return lr - lr * (step_num - num_warmup_steps) / (num_train_steps - num_warmup_steps)


def test_lr_schedule_is_the_tutorials():
    schedule = lr_schedule(2e-5, 300, 50)
    got = [schedule(n) for n in range(1, 301)]
    # float64 arithmetic, two formulas for the same numbers: a few ulps (2**-52 ~ 2e-16 each) of values <= 2e-5
    np.testing.assert_allclose(got, [tutorial_lr(n, 2e-5, 300) for n in range(1, 301)], rtol=1e-12, atol=1e-15)
    assert got[49] == pytest.approx(2e-5) and got[-1] == 0  # float64: approx's 1e-6 is far above its round-off


@pytest.mark.parametrize('total', [1, 2, 10, 50])
def test_short_runs_cap_the_warmup(total):
    schedule = lr_schedule(1.0, total, 50)
    lrs = [schedule(n) for n in range(1, total + 1)]
    assert lrs[-1] == 0 and all(0 <= x <= 1 for x in lrs)
    if total > 1:
        assert max(lrs) == pytest.approx(1.0)  # the run leaves the warm-up (float64, to round-off)


def _toy_loaders(vocab, n_train, batch_size):
    tok = nlp.data.BERTTokenizer(vocab, lower=True)
    # shuffle=False: the reference loop below sees the batches in the same order
    train = sentiment_loader(toy_reviews(n_train, seed=1), tok, vocab, 16, batch_size, shuffle=False, bucket=False)
    test = sentiment_loader(toy_reviews(16, seed=2), tok, vocab, 16, batch_size, shuffle=False, bucket=False)
    return train, test


def test_train_loop_with_seven_arguments_is_the_tutorials_recipe(tiny_vocab, tmp_path, capsys):
    """Parameters after train_loop(net, train, test, 2, lr, ctx, loss) equal those of the tutorial's loop written
    out: Trainer(collect_params(), 'bertadam', wd 0.01), 50 warm-up steps, backward on the loss vector,
    clip_grad_global_norm(params, 1), trainer.update(1). 2 epochs of 30 batches: warm-up and decay both run, and
    clipping both acts and does not."""
    from bert_tutorial import build_encoder
    config = tiny_bert_config(len(tiny_vocab))
    train, test = _toy_loaders(tiny_vocab, 120, 4)
    assert len(train) == 30
    lr, num_epoch = 5e-3, 2
    init = tmp_path / 'init.params'
    results, norms = [], []
    for ours in (True, False):
        net = BERTClassifier(build_encoder(config), 2)
        net.classifier.initialize(mx.init.Normal(0.02))
        if ours:
            net.save_parameters(str(init))
            train_loop(net, train, test, num_epoch, lr, mx.cpu(), gluon.loss.SoftmaxCELoss())
        else:
            net.load_parameters(str(init))
            trainer = gluon.Trainer(net.collect_params(), 'bertadam', {'learning_rate': lr, 'wd': 0.01})
            params = [p for p in net.collect_params().values() if p.grad_req != 'null']
            step_num, total = 0, len(train) * num_epoch
            for _ in range(num_epoch):
                for inputs, seq_len, token_types, label in train:
                    step_num += 1
                    trainer.set_learning_rate(tutorial_lr(step_num, lr, total))
                    with autograd.record():
                        loss = gluon.loss.SoftmaxCELoss()(net(inputs, token_types, seq_len), label)
                    loss.backward()
                    trainer.allreduce_grads()
                    norms.append(nlp.utils.clip_grad_global_norm(params, 1))
                    trainer.update(1)
        results.append({k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()})
    assert min(norms) < 1 < max(norms)  # some steps clipped, some not: both branches of the clipping compared
    start = {k: v.asnumpy() for k, v in nd.load(str(init)).items()}
    # Bit for bit, on any CPU: step by step, train_loop runs on the same arrays the (deterministic) MXNet operators
    # the loop above runs: the same forward and backward, GluonNLP's grad_global_norm (multi_sum_sq + add_n over the
    # parameters in the same order), BERTAdam's multi_adamw_update (each weight's update on its own elements). The
    # one number computed another way is the clip factor: train_loop passes it as the optimizer's rescale_grad,
    # 1 / (1 / (1 / norm)) in float64 rounded to float32, where clip_grad_global_norm multiplies the gradients by
    # float32 1 / norm. Both are fl32(1 / norm): three float64 roundings stay within 2**-51 of 1 / norm, and 1 / norm
    # (norm a float32: 24 significant bits) is never within 2**-49 (relative) of a float32 rounding midpoint;
    # grad * scale is then the same float32 product in either place (exactly 1 when not clipped). The learning
    # rates (float64 arithmetic, the same on every CPU) are the same float32 numbers, checked here. So no
    # tolerance: any difference is a change of recipe. (Adam turns a single ulp into 1e-5 within 60 steps here,
    # where a gradient is a small difference of large terms: a tolerance would only be one some CPU's rounding meets.)
    schedule = lr_schedule(lr, total, 50)
    assert [np.float32(schedule(n)) for n in range(1, total + 1)] == \
        [np.float32(tutorial_lr(n, lr, total)) for n in range(1, total + 1)]
    for key, ref in results[1].items():
        np.testing.assert_array_equal(results[0][key], ref, err_msg=key)
    # trained: Adam moves a weight by up to lr = 5e-3 a step, and 60 steps move most tensors well past 1e-4
    assert sum(not np.allclose(start[k], results[1][k], rtol=0, atol=1e-4) for k in start) > len(start) // 2
    out = capsys.readouterr().out
    # a log line every 50 batches: batch 0 of each epoch only (30 batches an epoch)
    assert out.count('Batch 0 Accuracy') == 2 and 'Batch 50' not in out
    assert "Epoch 1, Accuracy ('accuracy', " in out and out.count('Test Accuracy') == 2


# Run in a new process: MXNet cannot unload a library, and this process may hold the package's kernels already.
# It imports what a tutorial reader imports (bert_tutorial, its tutorial classes and data transforms), nothing else
# of the package, until the control at the end.
SEVEN_ARGUMENTS = """
import json, sys
import gluonnlp as nlp, mxnet as mx
from mxnet import gluon
from conftest import WORDS, toy_reviews
import bert_tutorial
from bert_tutorial import BERTClassifier, BERTEncoder, train_loop
from bert_tutorial.tutorial import train
from bert_tutorial.tutorial.data import SentimentTransform, batchify_fn

trainers = []
make_trainer = train.make_trainer
train.make_trainer = lambda *a, **k: trainers.append(make_trainer(*a, **k)) or trainers[-1]
tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS
vocab = nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx={t: i for i, t in enumerate(tokens)})
transform = SentimentTransform(nlp.data.BERTTokenizer(vocab, lower=True), max_len=16)

def loader(examples, shuffle=False):
    return gluon.data.DataLoader(gluon.data.SimpleDataset([transform(*x) for x in examples]), batch_size=8,
                                 shuffle=shuffle, batchify_fn=batchify_fn(vocab['[PAD]']))

train_data, test_data = loader(toy_reviews(16, seed=1), shuffle=True), loader(toy_reviews(8, seed=2))

def library_mapped():  # the package's C++ library among this process's shared objects
    with open('/proc/self/maps') as maps:
        return 'libbert_kernels' in maps.read()

def run(**options):
    net = BERTClassifier(BERTEncoder(len(vocab), 16, 32, 2, 1, dropout=0.1, max_len=16), 2)
    net.initialize(mx.init.Normal(0.02))
    if options.pop('accelerate', False):
        from bert_tutorial.speed import accelerate
        ids, valid_len, segments, _ = next(iter(test_data))
        net(ids, segments, valid_len)  # the tutorial's LayerNorms learn their width at the first call
        options['optimizer'] = accelerate(net).optimizer
    train_loop(net, train_data, test_data, 1, 5e-5, mx.cpu(), gluon.loss.SoftmaxCELoss(), **options)
    optimizer = type(trainers[-1].optimizer)
    return {'bertadam': optimizer is nlp.optimizer.BERTAdam, 'optimizer': optimizer.__name__,
            'modules': sorted(m for m in sys.modules if m.startswith(('bert_tutorial.speed', 'bert_tutorial.recipes'))),
            'ops': sorted(n for n in dir(mx.nd) if n.startswith('bert_')), 'library': library_mapped()}

report = {'seven': run()}
from bert_tutorial.speed import kernels
if kernels.kernels_enabled() and kernels._compiler():  # the control: the one keyword brings the plug-in in
    report['fast'] = run(accelerate=True)
print(json.dumps(report))
"""


@pytest.mark.skipif(not Path('/proc/self/maps').exists(), reason='reads the shared objects from /proc/self/maps')
def test_seven_argument_train_loop_loads_no_library_and_runs_gluonnlps_bert_adam():
    """``import bert_tutorial`` and train_loop(net, train, test, num_epoch, lr, ctx, loss) on a tutorial
    ``BERTEncoder`` classifier, in a new process: GluonNLP's BERTAdam itself, no module of the speed plug-in or of
    the recipes imported, no C++ library loaded, no ``bert_`` operator in ``mx.nd``; then (where a compiler is there)
    the same process with ``optimizer=accelerate(net).optimizer`` has all of them, so the checks can see them."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f'{root}{os.pathsep}{root / "tests"}')
    done = subprocess.run([sys.executable, '-c', SEVEN_ARGUMENTS], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['seven'] == {'bertadam': True, 'optimizer': 'BERTAdam', 'modules': [], 'ops': [],
                               'library': False}
    if 'fast' in report:
        fast = report['fast']
        assert fast['optimizer'] == 'FusedBERTAdam' and fast['library']
        assert 'bert_adam_update' in fast['ops'] and 'bert_sum_sq' in fast['ops']
        assert 'bert_tutorial.speed.accelerate' in fast['modules']


def test_train_loop_rejects_bad_recipe_options(tiny_bert, tiny_vocab):
    train, test = _toy_loaders(tiny_vocab, 16, 4)
    net = BERTClassifier(tiny_bert, 2)
    net.classifier.initialize()
    with pytest.raises(ValueError, match="loss_reduction must be one of 'sum', 'mean', got 'max'"):
        train_loop(net, train, test, 1, 1e-3, mx.cpu(), gluon.loss.SoftmaxCELoss(), loss_reduction='max')
    with pytest.raises(ValueError, match=r'warmup_ratio must be 0 or in \[1.2e-38, 1\), got 1.5'):
        train_loop(net, train, test, 1, 1e-3, mx.cpu(), gluon.loss.SoftmaxCELoss(), warmup_ratio=1.5)


def test_masks_of_any_type_of_zeros_and_ones_are_taken():
    enc = BERTEncoder(VOCAB, UNITS, HIDDEN, HEADS, 1, dropout=0.0, max_len=MAX_LEN)
    enc.initialize()
    enc.hybridize()
    words, segments = tutorial_batch()
    mask = tutorial_mask()
    expected = enc(words, segments, mask).asnumpy()
    for dtype in ('int32', 'uint8', 'float64'):
        # the same 0/1 mask after a cast: the same operators, at most the round-off of a reordered sum
        np.testing.assert_allclose(enc(words, segments, mask.astype(dtype)).asnumpy(), expected, rtol=1e-6)
