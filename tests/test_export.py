import gluonnlp as nlp
import mxnet as mx
import pytest

from bert_tutorial import BERTClassifier, save_classifier
from bert_tutorial.export import export_classifier, load_exported
from bert_tutorial.predict import predict_sentiments
from bert_tutorial.pretrained import describe_bert

SENTENCES = ['the movie was good', 'bad bad plot', 'a', 'good ' * 300]


def test_exported_model_predicts_like_the_original(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    save_classifier(net, tiny_vocab, tmp_path / 'm', {'bert': describe_bert(tiny_bert), 'max_len': 32})
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    before = predict_sentiments(net, mx.cpu(), tiny_vocab, tok, SENTENCES, max_len=32)
    out = export_classifier(tmp_path / 'm')
    assert (out / 'classifier-symbol.json').is_file() and (out / 'classifier-0000.params').is_file()
    block, vocab, config = load_exported(out)
    assert isinstance(block, mx.gluon.SymbolBlock) and config['max_len'] == 32
    after = predict_sentiments(block, mx.cpu(), vocab, nlp.data.BERTTokenizer(vocab, lower=True), SENTENCES,
                               max_len=config['max_len'])
    assert [a[0] for a in after] == [b[0] for b in before]
    assert [a[1] for a in after] == pytest.approx([b[1] for b in before], abs=1e-6)


def test_incomplete_export_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match='is not an export'):
        load_exported(tmp_path)
