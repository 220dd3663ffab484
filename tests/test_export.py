import json

import gluonnlp as nlp
import mxnet as mx
import pytest
from conftest import toy_reviews

from bert_tutorial import BERTClassifier, load_model, save_model
from bert_tutorial.recipes.export import (
    export_classifier,
    fuse_classifier,
    int8_layers,
    quantize_classifier,
    softmax_without_length,
)
from bert_tutorial.recipes.hub import classifier_config
from bert_tutorial.tutorial.data import SentimentTransform, batchify_fn
from bert_tutorial.tutorial.predict import predict_sentiments

SENTENCES = ['the movie was good', 'bad bad plot', 'a', 'good ' * 300]


def test_exported_model_predicts_like_the_original(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    before = predict_sentiments(net, mx.cpu(), tiny_vocab, tok, SENTENCES, max_len=32)
    out = export_classifier(tmp_path / 'm')
    assert (out / 'model-symbol.json').is_file() and (out / 'model-0000.params').is_file()
    block, vocab, config = load_model(out)
    assert isinstance(block, mx.gluon.SymbolBlock) and config['max_len'] == 32
    after = predict_sentiments(block, mx.cpu(), vocab, nlp.data.BERTTokenizer(vocab, lower=True), SENTENCES,
                               max_len=config['max_len'])
    assert [a[0] for a in after] == [b[0] for b in before]
    # the exported graph runs the same operators: probabilities equal to float32 round-off
    assert [a[1] for a in after] == pytest.approx([b[1] for b in before], abs=1e-6)


def test_incomplete_export_dir(tmp_path):
    from bert_tutorial.recipes.hub import config_digest
    config = {'format_version': 1, 'model_type': 'exported_classifier', 'inputs': ['data0', 'data1', 'data2']}
    (tmp_path / 'config.json').write_text(json.dumps(dict(config, config_sha256=config_digest(config))))
    with pytest.raises(FileNotFoundError, match='is not a complete saved exported_classifier: model-symbol.json'):
        load_model(tmp_path)


def _toy_batches(vocab, tok, texts, batch_size=8):
    transform, batchify = SentimentTransform(tok, 32), batchify_fn(vocab[vocab.padding_token])
    out = []
    for i in range(0, len(texts), batch_size):
        ids, valid_len, segments, _ = batchify([transform(t) for t in texts[i:i + batch_size]])
        out.append((ids, segments, valid_len))
    return out


def test_fused_and_int8_graphs(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    block, vocab, _ = load_model(export_classifier(tmp_path / 'm'))
    texts = [t for t, _ in toy_reviews(64, seed=1)]
    before = predict_sentiments(block, mx.cpu(), vocab, tok, texts, max_len=32)

    fused = fuse_classifier(block)
    assert int8_layers(fused) == {'int8': [], 'float32': int8_layers(fused)['float32']}
    assert len(int8_layers(fused)['float32']) == 5  # 1 layer: QKV, projection, 2 FFN; the classifier
    after = predict_sentiments(fused, mx.cpu(), vocab, tok, texts, max_len=32)
    # oneDNN's fused dense + activation rounds its sums in another order: round-off of a 1-layer, 16-unit net
    assert [a[1] for a in after] == pytest.approx([b[1] for b in before], abs=1e-5)

    int8 = quantize_classifier(block, _toy_batches(vocab, tok, [t for t, _ in toy_reviews(64, seed=2)]))
    assert len(int8_layers(int8)['int8']) == 5 and not int8_layers(int8)['float32']
    quantized = predict_sentiments(int8, mx.cpu(), vocab, tok, texts, max_len=32)
    agree = sum(q[0] == b[0] for q, b in zip(quantized, before)) / len(texts)
    assert agree >= 0.9
    # INT8: weights and activations on 255 levels (a relative step of ~1/127 each) through a 1-layer net:
    # probabilities move by a few hundredths, 0.1 bounds them
    assert [q[1] for q in quantized] == pytest.approx([b[1] for b in before], abs=0.1)

    kept = quantize_classifier(block, _toy_batches(vocab, tok, texts), exclude_layers=['sg_mkldnn_fully_connected_4'])
    assert len(int8_layers(kept)['int8']) == 4 and len(int8_layers(kept)['float32']) == 1


def test_quantize_needs_calibration_data(tiny_bert, tiny_vocab):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize()
    with pytest.raises(ValueError, match='calib_batches is empty'):
        quantize_classifier(net, [])
    with pytest.raises(ValueError, match="calib_mode must be 'naive' or 'entropy'"):
        quantize_classifier(net, [], calib_mode='none')


def test_int8_export_loads_like_any_export(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    texts = [t for t, _ in toy_reviews(64, seed=1)]
    before = predict_sentiments(net, mx.cpu(), tiny_vocab, tok, texts, max_len=32)
    out = export_classifier(tmp_path / 'm', tmp_path / 'int8', int8_calibration=[t for t, _ in toy_reviews(64, 2)])
    block, vocab, config = load_model(out)
    assert config['int8'] == {'calib_mode': 'naive', 'calib_sentences': 64, 'int8_dense_layers': 5}
    assert len(int8_layers(block)['int8']) == 5
    after = predict_sentiments(block, mx.cpu(), vocab, tok, texts, max_len=32)
    assert sum(a[0] == b[0] for a, b in zip(after, before)) / len(texts) >= 0.9


def test_softmax_without_length_gives_the_same_weights():
    scores, lengths = mx.sym.var('scores'), mx.sym.var('lengths')
    sym = mx.sym.softmax(scores, lengths, axis=-1, use_length=True) + mx.sym.softmax(scores * 2, lengths, axis=-1,
                                                                                     use_length=True)
    fast = softmax_without_length(sym)
    ops = [n['op'] for n in json.loads(fast.tojson())['nodes']]
    assert ops.count('softmax') == 2 and ops.count('broadcast_lesser') == 1  # one mask for equal lengths
    x = mx.nd.random.normal(shape=(6, 5, 5)) * 3
    n = mx.nd.array([[1] * 5, [5] * 5, [3] * 5, [2] * 5, [4] * 5, [5] * 5], dtype='int32')
    want = sym.eval(scores=x, lengths=n)[0]
    got = fast.eval(scores=x, lengths=n)[0]
    assert abs(got - want).max().asscalar() < 1e-6
    assert (got[0, :, 1:] == 0).asnumpy().all()  # masked positions are exactly 0
