"""Labelled files, the classification report, ``evaluate`` and ``predict``'s file and JSON options."""
import json
from pathlib import Path

import mxnet as mx
import pytest
from conftest import run_cli

from bert_tutorial import BERTClassifier, save_model
from bert_tutorial.recipes.evaluation import classification_report
from bert_tutorial.recipes.hub import classifier_config
from bert_tutorial.recipes.sentiment_data import read_labelled_file

EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'reviews.csv'


def test_the_example_file_and_each_format(tmp_path):
    rows = read_labelled_file(EXAMPLE)
    assert len(rows) == 6 and rows[0] == ('A warm, funny film with a great cast.', 'positive')
    (tmp_path / 'a.tsv').write_text('label\ttext\n1\tgood fun\n0\tdull\n')
    assert read_labelled_file(tmp_path / 'a.tsv') == [('good fun', '1'), ('dull', '0')]
    (tmp_path / 'a.jsonl').write_text('{"review": "good fun", "stars": 5}\n\n{"review": "dull", "stars": 1}\n')
    assert read_labelled_file(tmp_path / 'a.jsonl', 'review', 'stars') == [('good fun', '5'), ('dull', '1')]


@pytest.mark.parametrize('name, content, match', [
    ('a.csv', 'words,label\nfun,1\n', r"a.csv, line 1: no column 'text' in the header \['words', 'label'\]"),
    ('a.csv', 'text,label\nfun,1\n  ,0\n', r"a.csv, line 3: the 'text' is empty"),
    ('a.tsv', 'text\tlabel\nfun\t\n', r"a.tsv, line 2: the 'label' is empty"),
    ('a.jsonl', '{"text": "fun", "label": 1}\n{"text": "dull", \n', r'a.jsonl, line 2: not JSON'),
    ('a.jsonl', '{"text": "fun"}\n', r"a.jsonl, line 1: no key 'label' \(the keys: \['text'\]\)"),
    ('a.txt', 'text,label\n', r"a.txt: the file name must end in .csv, .tsv or .jsonl, got '.txt'"),
    ('a.csv', 'text,label\n', r'a.csv holds no examples'),
])
def test_bad_files_name_the_file_and_the_line(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        read_labelled_file(tmp_path / name)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / 'a.csv').write_bytes('text,label\nfun,1\ncafé,0\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'a.csv, line 3: not utf-8 .invalid continuation byte at byte offset 20'):
        read_labelled_file(tmp_path / 'a.csv')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_labelled_file(tmp_path / 'none.csv')


def test_classification_report_by_hand():
    actual = ['a', 'a', 'a', 'b', 'b', 'c']
    predicted = ['a', 'a', 'b', 'b', 'c', 'c']
    report = classification_report(actual, predicted, ['a', 'b', 'c'])
    assert report['confusion'] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # float divisions of counts: equal to the last ulp
    assert report['accuracy'] == pytest.approx(4 / 6)
    assert report['classes']['a'] == {'precision': 1.0, 'recall': pytest.approx(2 / 3), 'f1': pytest.approx(0.8),
                                      'support': 3}
    assert report['classes']['b'] == {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'support': 2}
    assert report['classes']['c'] == {'precision': 0.5, 'recall': 1.0, 'f1': pytest.approx(2 / 3), 'support': 1}


@pytest.fixture
def model_dir(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    return save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))


def cli(*args, check=True):
    return run_cli(*args, check=check)  # in this process: the commands' output, not a new process, is the point


def test_evaluate_and_predict_from_files(model_dir, tmp_path):
    data = tmp_path / 'd.csv'
    data.write_text('text,label\nthe movie was good,positive\na dull plot,0\ngreat fun,1\nawful,negative\n')
    out = cli('evaluate', '--model-dir', str(model_dir), '--data', str(data), '--output', str(tmp_path / 'r.json'))
    report = json.loads((tmp_path / 'r.json').read_text())
    assert f"accuracy {report['accuracy']:.4f} on 4 examples" in out.stdout
    assert sum(map(sum, report['confusion'])) == 4 and [sum(r) for r in report['confusion']] == [2, 2]
    (tmp_path / 'sentences.txt').write_text('the movie was good\n\na dull plot\ngreat fun\nawful\n')
    lines = cli('predict', '--model-dir', str(model_dir), '--input', str(tmp_path / 'sentences.txt'),
                '--json').stdout.splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p['text'] for p in predictions] == ['the movie was good', 'a dull plot', 'great fun', 'awful']
    predicted = [p['label'] for p in predictions]
    actual = ['positive', 'negative', 'positive', 'negative']
    # float divisions of counts: equal to the last ulp
    assert report['accuracy'] == pytest.approx(sum(a == p for a, p in zip(actual, predicted)) / 4)
    bad = tmp_path / 'bad.csv'
    bad.write_text('text,label\nfine,neutral\n')
    proc = cli('evaluate', '--model-dir', str(model_dir), '--data', str(bad), check=False)
    assert proc.returncode == 2 and "bad.csv: the labels ['neutral'] are not classes of the model" in proc.stderr
