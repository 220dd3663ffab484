import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from bert_tutorial import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier

VOCAB = 50


@pytest.fixture
def encoder():
    enc = BERTEncoder(vocab_size=VOCAB, units=16, hidden_size=32, num_heads=4, num_layers=2, dropout=0.1)
    enc.initialize(mx.init.Xavier())
    return enc


def batch(B=2, T=8):
    words = nd.random.randint(0, VOCAB, shape=(B, T)).astype('float32')
    segments = nd.array([[0] * 4 + [1] * (T - 4), [0] * 3 + [1] * (T - 3)][:B])
    return words, segments


def test_shapes(encoder):
    words, segments = batch()
    X = encoder(words, segments, None)
    assert X.shape == (2, 8, 16)
    ns = NSClassifier(units=16)
    ns.initialize()
    assert ns(X).shape == (2, 1)
    mlm = MLMDecoder(VOCAB, 16)
    mlm.initialize()
    assert mlm(X, nd.array([[0, 1, 1], [4, 7, 0]])).shape == (3, VOCAB)
    clf = BERTClassifier(encoder, 3)
    clf.initialize()
    assert clf(words, segments, nd.array([8, 5])).shape == (2, 3)


def test_segment_embedding_changes_output(encoder):
    words, segments = batch()
    a = encoder(words, segments, None).asnumpy()
    b = encoder(words, nd.zeros_like(segments), None).asnumpy()
    # another segment embedding moves these rows by O(0.1), far past allclose's 1e-5
    assert not np.allclose(a[0, 4:], b[0, 4:])


@pytest.mark.parametrize('hybridize', [False, True])
def test_masking_hides_padding(encoder, hybridize):
    if hybridize:
        encoder.hybridize()
    words, segments = batch()
    valid = nd.array([5, 8])
    a = encoder(words, segments, valid).asnumpy()
    words2 = words.copy()
    words2[0, 5:] = (words2[0, 5:] + 1) % VOCAB
    b = encoder(words2, segments, valid).asnumpy()
    # padded keys get weight exactly 0 (masked softmax), so only float32 round-off of O(1) encodings could differ
    np.testing.assert_allclose(a[0, :5], b[0, :5], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    # Without the mask, the same change leaks into every position.
    c = encoder(words, segments, None).asnumpy()
    d = encoder(words2, segments, None).asnumpy()
    assert np.abs(c[0, :5] - d[0, :5]).max() > 1e-3


def test_inference_is_deterministic_training_is_not(encoder):
    words, segments = batch()
    np.testing.assert_array_equal(encoder(words, segments, None).asnumpy(),
                                  encoder(words, segments, None).asnumpy())
    with autograd.record():
        a = encoder(words, segments, None)
        b = encoder(words, segments, None)
    # dropout's masks change outputs by O(0.1): far past allclose's 1e-5
    assert not np.allclose(a.asnumpy(), b.asnumpy())


def test_every_parameter_gets_a_gradient(encoder):
    ns, mlm = NSClassifier(units=16), MLMDecoder(VOCAB, 16)
    ns.initialize(mx.init.Xavier())
    mlm.initialize(mx.init.Xavier())
    words, segments = batch()
    with autograd.record():
        X = encoder(words, segments, nd.array([6, 8]))
        loss = (gluon.loss.SigmoidBinaryCrossEntropyLoss()(ns(X), nd.array([0, 1])).mean()
                + gluon.loss.SoftmaxCrossEntropyLoss()(mlm(X, nd.array([[0, 1], [2, 7]])), nd.array([3, 4])).mean())
    loss.backward()
    checked = 0
    for block in (encoder, ns, mlm):
        for name, p in block.collect_params().items():
            if p.grad_req == 'null':
                continue
            assert np.abs(p.grad().asnumpy()).sum() > 0, f'{name} has a zero gradient'
            checked += 1
    assert checked > 20
    assert np.abs(encoder.segment_embed.weight.grad().asnumpy()).sum() > 0


def test_tutorial_position_8_of_8_is_rejected(encoder):
    mlm = MLMDecoder(VOCAB, 16)
    mlm.initialize()
    X = encoder(*batch(), None)
    with pytest.raises(ValueError, match='position 8 is out of range for a sequence of length 8'):
        mlm(X, nd.array([[0, 1], [4, 8]]))


@pytest.mark.parametrize('bad, match', [
    (dict(segments=nd.array([[0, 0, 2, 1, 1, 1, 1, 1], [0] * 8])),
     r'segments must be segment ids in \{0, 1\}, found 2'),
    (dict(segments=nd.zeros((2, 7))), 'segments must have the same shape as words'),
    (dict(words=nd.array([[VOCAB] + [1] * 7, [1] * 8])), r'words must be token ids in \[0, 50\)'),
    (dict(words=nd.array([[-1] + [1] * 7, [1] * 8])), 'found -1'),
    (dict(words=nd.array([[1.5] + [1] * 7, [1] * 8])), 'words must hold integer values'),
    (dict(words=nd.ones((2, 8, 1))), r'words must have shape \(batch_size, seq_len\)'),
    (dict(mask=nd.array([0, 8])), r'mask must be lengths in \[1, 8\]'),
    (dict(mask=nd.array([9, 8])), 'found 9'),
    (dict(mask=nd.array([8, 8, 8])), r'mask must have shape \(batch_size,\) = \(2,\)'),
])
def test_encoder_rejects_bad_input(encoder, bad, match):
    words, segments = batch()
    args = dict(words=words, segments=segments, mask=None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        encoder(args['words'], args['segments'], args['mask'])


@pytest.mark.parametrize('positions, match', [
    (nd.array([1, 2]), r'must have shape \(2, num_masked\)'),
    (nd.array([[0, 1], [2, 3], [4, 5]]), r'must have shape \(2, num_masked\)'),
    (nd.array([[0, 2], [1, 1]]), 'batch index 2 is out of range for a batch of 2'),
    (nd.array([[0, 1], [-1, 1]]), 'position -1 is out of range'),
])
def test_mlm_rejects_bad_positions(encoder, positions, match):
    mlm = MLMDecoder(VOCAB, 16)
    mlm.initialize()
    X = encoder(*batch(), None)
    with pytest.raises(ValueError, match=match):
        mlm(X, positions)


def test_units_not_divisible_by_heads():
    with pytest.raises(ValueError, match='units must be divisible by num_heads'):
        BERTEncoder(vocab_size=10, units=30, hidden_size=8, num_heads=4, num_layers=1, dropout=0.0)


def test_classifier_rejects_bad_input(encoder):
    clf = BERTClassifier(encoder, 2)
    clf.initialize()
    words, segments = batch()
    with pytest.raises(ValueError, match=r'seq_len must be lengths in \[1, 8\]'):
        clf(words, segments, nd.array([0, 3]))
    with pytest.raises(ValueError, match='inputs must be token ids'):
        clf(words + VOCAB, segments, nd.array([8, 3]))
    with pytest.raises(ValueError, match='segment_types must be segment ids'):
        clf(words, segments * 3, nd.array([8, 3]))


def test_classifier_on_gluonnlp_bert_hybridizes():
    import gluonnlp as nlp
    enc = nlp.model.BERTEncoder(num_layers=1, units=16, hidden_size=32, max_length=16, num_heads=2)
    bert = nlp.model.BERTModel(enc, vocab_size=VOCAB, token_type_vocab_size=2, units=16, embed_size=16,
                               use_pooler=True, use_decoder=False, use_classifier=False)
    bert.initialize()
    clf = BERTClassifier(bert, 2)
    clf.initialize()
    words, segments = batch()
    valid = nd.array([8, 5])
    a = clf(words, segments, valid)
    clf.hybridize(static_alloc=True)
    b = clf(words, segments, valid)
    assert a.shape == (2, 2)
    # hybridized: the same operators, sums possibly reordered: float32 round-off of O(1) scores
    np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r'inputs must be token ids in \[0, 50\)'):
        clf(words + VOCAB, segments, valid)


def test_classifier_mean_pooling_ignores_padding(encoder):
    clf = BERTClassifier(encoder, 2, pooling='mean')
    clf.initialize()
    words, segments = batch()
    valid = nd.array([5, 8])
    a = clf(words, segments, valid).asnumpy()
    X = encoder(words, segments, valid).asnumpy()
    expected = clf.classifier(nd.array(np.stack([X[0, :5].mean(0), X[1].mean(0)]))).asnumpy()
    # the mean of <= 5 float32 rows taken two ways, then the same dense layer: round-off of O(1) scores
    np.testing.assert_allclose(a, expected, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean'"):
        BERTClassifier(encoder, 2, pooling='max')


def test_embedding_sum():
    """With no blocks, the encoder is word embedding + segment embedding + learned position embedding."""
    enc = BERTEncoder(VOCAB, 16, 32, 4, 0, 0.0, max_len=20)
    enc.initialize(mx.init.Normal(1.0))
    words, segments = batch()
    out = enc(words, segments, None).asnumpy()
    W, S, P = (x.data().asnumpy() for x in (enc.word_embed.weight, enc.segment_embed.weight,
                                            enc.pos_encoding.embed.weight))
    expected = W[words.asnumpy().astype(int)] + S[segments.asnumpy().astype(int)] + P[None, :8]
    # three float32 additions each way (numpy and MXNet) of N(0, 1) values: a few ulps
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_mean_pooling_on_an_encoder_without_pooler_hybridizes_without_warnings(tiny_vocab):
    """Mean pooling needs no pooler: built without one, nothing is unused and hybridizing does not warn."""
    import warnings

    from conftest import tiny_bert_config

    from bert_tutorial import build_encoder
    clf = BERTClassifier(build_encoder(tiny_bert_config(len(tiny_vocab)), use_pooler=False), 2, pooling='mean')
    clf.initialize()
    clf.hybridize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = clf(nd.array([[2, 5, 3]]), nd.zeros((1, 3)), nd.array([3]))
    assert out.shape == (1, 2)
    assert not [w for w in caught if 'not used by any computation' in str(w.message)]


@pytest.mark.parametrize('hybridize', [False, True])
def test_classifier_takes_any_integer_ids_and_refuses_what_would_be_wrong(tiny_vocab, hybridize):
    from conftest import tiny_bert_config

    from bert_tutorial import build_encoder
    clf = BERTClassifier(build_encoder(tiny_bert_config(len(tiny_vocab), max_len=8)), 2)
    clf.initialize()
    if hybridize:
        clf.hybridize()
    ids, segments, valid = [[2, 5, 7, 3]], [[0, 0, 1, 1]], [4]
    expected = clf(nd.array(ids), nd.array(segments), nd.array(valid)).asnumpy()
    for dtype in ('int32', 'int64', 'uint8', 'float64'):
        got = clf(nd.array(ids, dtype=dtype), nd.array(segments, dtype=dtype), nd.array(valid, dtype=dtype))
        # the same ids after a cast: the same operators, round-off of a reordered sum at most
        np.testing.assert_allclose(got.asnumpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match='inputs must hold integers .an integer or float32 array., got dtype float16'):
        clf(nd.array(ids, dtype='float16'), nd.array(segments), nd.array(valid))
    # GluonNLP's position embedding would read its last row for positions 8 and 9 without a word.
    with pytest.raises(ValueError, match='inputs has 10 positions, more than the 8 that bert has position embed'):
        clf(nd.ones((1, 10)), nd.zeros((1, 10)), nd.array([10]))


@pytest.mark.parametrize('make, match', [
    (lambda enc: BERTClassifier(enc, 2.5), 'num_classes must be an integer >= 1, got 2.5'),
    (lambda enc: BERTClassifier(enc, 2, dropout=2), r'dropout must be in \[0, 1\), got 2'),
    (lambda enc: NSClassifier(16)(nd.ones((2, 16))), r'X must have shape \(batch_size, seq_len, units\)'),
])
def test_bad_constructor_arguments_and_inputs(encoder, make, match):
    with pytest.raises(ValueError, match=match):
        make(encoder)
