import json
import os

import gluonnlp as nlp
import mxnet as mx
import pytest

from bert_tutorial import BERTClassifier, load_model, predict_sentiment, predict_sentiments, save_model
from bert_tutorial.recipes.hub import classifier_config


@pytest.fixture
def classifier(tiny_bert, tiny_vocab):
    net = BERTClassifier(tiny_bert, 2, dropout=0.1)
    net.classifier.initialize(mx.init.Normal(0.5))
    return net, tiny_vocab, nlp.data.BERTTokenizer(tiny_vocab, lower=True)


SENTENCES = ['the movie was great fun', 'a dull plot', 'awful', 'GOOD ' * 500, 'émoji 🎬 ok 映画']


def test_predictions_are_labels_with_probabilities(classifier):
    net, vocab, tok = classifier
    assert predict_sentiment(net, mx.cpu(), vocab, tok, 'this movie is so great') in ('positive', 'negative')
    results = predict_sentiments(net, mx.cpu(), vocab, tok, SENTENCES, batch_size=2)
    assert len(results) == len(SENTENCES)
    for label, prob in results:
        assert label in ('positive', 'negative') and 0.5 <= prob <= 1.0
    single = [predict_sentiment(net, mx.cpu(), vocab, tok, s) for s in SENTENCES]
    assert single == [label for label, _ in results]  # batching and padding change nothing


def test_length_sorting_keeps_the_order_and_the_scores(classifier):
    net, vocab, tok = classifier
    sentences = SENTENCES + ['good', 'the plot was a dull and awful movie', 'fun'] * 3
    plain = predict_sentiments(net, mx.cpu(), vocab, tok, sentences, batch_size=4, sort_by_length=False)
    by_length = predict_sentiments(net, mx.cpu(), vocab, tok, sentences, batch_size=4, sort_by_length=True)
    assert [label for label, _ in by_length] == [label for label, _ in plain]
    # other batches pad to other lengths; padded keys weigh exactly 0, so only the order of float32 sums changes:
    # round-off of probabilities in [0, 1]
    assert [p for _, p in by_length] == pytest.approx([p for _, p in plain], abs=1e-5)


@pytest.mark.parametrize('bad, match', [('', 'empty'), ('   \n\t', 'empty'), (None, 'must be a string'),
                                        (3.5, 'must be a string')])
def test_bad_sentences(classifier, bad, match):
    net, vocab, tok = classifier
    with pytest.raises(ValueError, match=match):
        predict_sentiment(net, mx.cpu(), vocab, tok, bad)
    with pytest.raises(ValueError, match=match):
        predict_sentiments(net, mx.cpu(), vocab, tok, ['fine', bad])
    with pytest.raises(ValueError, match='list of strings'):
        predict_sentiments(net, mx.cpu(), vocab, tok, 'not a list')


def test_save_load_round_trip(classifier, tmp_path):
    net, vocab, tok = classifier
    before = predict_sentiments(net, mx.cpu(), vocab, tok, SENTENCES)
    save_model(tmp_path / 'm', net, vocab, classifier_config(net, 128, ['negative', 'positive'], base_model='tiny'))
    net2, vocab2, config = load_model(tmp_path / 'm')
    assert config['base_model'] == 'tiny' and config['labels'] == ['negative', 'positive']
    assert vocab2.idx_to_token == vocab.idx_to_token and vocab2.padding_token == '[PAD]'
    after = predict_sentiments(net2, mx.cpu(), vocab2, nlp.data.BERTTokenizer(vocab2, lower=True), SENTENCES)
    assert [a[0] for a in after] == [b[0] for b in before]
    # the same parameters reloaded into the same operators: probabilities equal to float32 round-off
    assert [a[1] for a in after] == pytest.approx([b[1] for b in before], abs=1e-6)


def test_missing_or_incomplete_model_dir(classifier, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist: expected a saved bert_tutorial model'):
        load_model(tmp_path / 'nothing')
    net, vocab, _ = classifier
    save_model(tmp_path / 'm', net, vocab, classifier_config(net, 16, ['negative', 'positive']))
    (tmp_path / 'm' / 'vocab.json').unlink()
    with pytest.raises(FileNotFoundError, match='is not a complete saved classifier: vocab.json missing'):
        load_model(tmp_path / 'm')
    with pytest.raises(ValueError, match='holds a classifier, not the encoder asked for'):
        load_model(tmp_path / 'm', model_type='encoder')


def test_folders_of_bert_tutorial_0_1_still_load():
    """tests/fixtures/legacy_classifier was written by save_classifier before the save format changed."""
    from pathlib import Path

    import numpy as np
    from mxnet import nd

    fixtures = Path(__file__).parent / 'fixtures'
    net, vocab, config = load_model(fixtures / 'legacy_classifier')
    assert config['model_type'] == 'classifier' and config['pooling'] == 'mean' and config['max_len'] == 16
    assert len(vocab) == 17 and getattr(net.bert, 'pooler', None) is None  # its unused pooler is not loaded
    inputs = np.load(fixtures / 'legacy_classifier_expected.npz')  # its scores were recorded on one CPU: unused
    scores = net(nd.array(inputs['ids']), nd.array(inputs['segments']), nd.array(inputs['valid'])).asnumpy()
    # The reference: the file's tensors in float64 numpy (test_hub's BERT, by Hugging Face's names), mean-pooled
    # over the valid tokens, then the classifier.
    from test_hub import _numpy_bert
    params = {k: v.asnumpy().astype(np.float64) for k, v in nd.load(str(fixtures / 'legacy_classifier' /
                                                                         'model.params')).items()}
    names = {'bert.word_embed.0.weight': 'embeddings.word_embeddings.weight',
             'bert.token_type_embed.0.weight': 'embeddings.token_type_embeddings.weight',
             'bert.encoder.position_weight': 'embeddings.position_embeddings.weight',
             'bert.encoder.layer_norm.gamma': 'embeddings.LayerNorm.weight',
             'bert.encoder.layer_norm.beta': 'embeddings.LayerNorm.bias'}
    cell, layer = 'bert.encoder.transformer_cells.0.', 'encoder.layer.0.'
    for ours, theirs in [('attention_cell.proj_query', 'attention.self.query'),
                         ('attention_cell.proj_key', 'attention.self.key'),
                         ('attention_cell.proj_value', 'attention.self.value'), ('proj', 'attention.output.dense'),
                         ('ffn.ffn_1', 'intermediate.dense'), ('ffn.ffn_2', 'output.dense')]:
        names[f'{cell}{ours}.weight'], names[f'{cell}{ours}.bias'] = f'{layer}{theirs}.weight', f'{layer}{theirs}.bias'
    for ours, theirs in [('layer_norm', 'attention.output.LayerNorm'), ('ffn.layer_norm', 'output.LayerNorm')]:
        names[f'{cell}{ours}.gamma'], names[f'{cell}{ours}.beta'] = f'{layer}{theirs}.weight', f'{layer}{theirs}.bias'
    tensors = {theirs: params[ours] for ours, theirs in names.items()}
    sizes = {'num_attention_heads': 2, 'hidden_size': 16, 'num_hidden_layers': 1}
    expected = []
    for ids, segments, n in zip(inputs['ids'].astype(int), inputs['segments'].astype(int), inputs['valid'].astype(int)):
        seq, _ = _numpy_bert(dict(tensors, **{'pooler.dense.weight': np.eye(16), 'pooler.dense.bias': np.zeros(16)}),
                             sizes, ids[:n], segments[:n])  # the valid tokens alone: what the masked model sees
        expected.append(seq.mean(0) @ params['classifier.weight'].T + params['classifier.bias'])
    # float32 round-off of a 1-layer, 16-unit forward against float64: each dot product sums at most 32 terms
    # (error <= 32 * 2**-24 * sum |a * b|, about 2e-6 * sum |a * b|), and LayerNorm renormalises after each
    # sublayer; the scores are O(1), so 1e-5 holds with room on any CPU.
    np.testing.assert_allclose(scores, np.array(expected), rtol=1e-5, atol=1e-5)


def test_settings_that_would_give_wrong_answers_are_refused(classifier):
    net, vocab, tok = classifier
    with pytest.raises(ValueError, match='max_len must be at most 128, the positions the model has embeddings for, '
                                         'got 129'):
        predict_sentiments(net, mx.cpu(), vocab, tok, ['fine'], max_len=129)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f'batch_size must be an integer >= 1, got {bad}'):
            predict_sentiments(net, mx.cpu(), vocab, tok, ['fine'], batch_size=bad)


def test_text_with_no_word_the_tokenizer_keeps_gets_no_label(classifier):
    net, vocab, tok = classifier
    with pytest.raises(ValueError, match=r"sentences\[1\] has no word the tokenizer keeps \('\\x00\\u200b'\)"):
        predict_sentiments(net, mx.cpu(), vocab, tok, ['fine', '\x00\u200b'])


@pytest.fixture
def saved(classifier, tmp_path):
    net, vocab, _ = classifier
    return save_model(tmp_path / 'm', net, vocab, classifier_config(net, 32, ['negative', 'positive']))


def _overwrite_one_tensor(path):
    """Overwrite 64 bytes in place near the end of the file (one tensor's values): same size, still loadable."""
    data = bytearray(path.read_bytes())
    data[-200:-136] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage, match', [
    (lambda m: _overwrite_one_tensor(m / 'model.params'), 'model.params does not match the sha256'),
    (lambda m: os.truncate(m / 'model.params', 1000), 'model.params does not match the sha256'),
    (lambda m: (m / 'vocab.json').write_text('{"garbage": 1}'), 'vocab.json does not match the sha256'),
    (lambda m: (m / 'config.json').write_text('{not json'), r'config.json is not valid JSON'),
    (lambda m: (m / 'config.json').write_text('[1, 2]'), r'config.json holds no model config'),
    (lambda m: _edit_config(m, num_layers=2), r'model.params does not fit the model of config.json: missing'),
    (lambda m: _edit_config(m, units=12, num_heads=4), r'model.params: .* has shape .*config.json asks for'),
    (lambda m: _edit_config(m, num_heads=3), r'config.json does not describe a model this package builds'),
])
def test_a_damaged_saved_model_is_refused_naming_the_file(saved, damage, match):
    damage(saved)
    with pytest.raises(ValueError, match=match):
        load_model(saved)


def _edit_config(folder, reseal=True, **encoder):
    """Change the encoder's sizes in config.json; ``reseal``: with a matching config_sha256, as a faulty writer
    would leave it (load_model then finds that config and weights disagree)."""
    from bert_tutorial.recipes.hub import config_digest
    config = json.loads((folder / 'config.json').read_text())
    config['encoder'].update(encoder)
    if reseal:
        config['config_sha256'] = config_digest(config)
    (folder / 'config.json').write_text(json.dumps(config))


def test_a_config_edited_after_saving_is_refused(saved):
    _edit_config(saved, reseal=False, num_layers=2)
    with pytest.raises(ValueError, match='config.json does not match the config_sha256 it records'):
        load_model(saved)


def test_folders_of_0_2_to_0_4_are_refused_until_sealed(saved):
    """They record the sha256 of their files, not of config.json: seal_config verifies the files and records it."""
    from bert_tutorial.recipes.hub import seal_config
    config = json.loads((saved / 'config.json').read_text())
    del config['config_sha256']
    (saved / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match="records no config_sha256.*seal_config"):
        load_model(saved)
    vocab = (saved / 'vocab.json').read_text()
    (saved / 'vocab.json').write_text('{"garbage": 1}')
    with pytest.raises(ValueError, match='vocab.json does not match the sha256'):
        seal_config(saved)  # only a folder whose files are as saved
    (saved / 'vocab.json').write_text(vocab)
    seal_config(saved)
    assert load_model(saved)[2]['labels'] == ['negative', 'positive']
