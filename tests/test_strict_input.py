"""Input files and flags parsed strictly (issue 23, items 3, 6, 8 and 19): every defect a wrong answer before, an
error naming the file and line (or the flag) now, or the right answer."""
import json
import logging
import re

import mxnet as mx
import pytest
from conftest import toy_reviews

from bert_tutorial import BERTClassifier, save_model
from bert_tutorial.cli import main
from bert_tutorial.recipes.hub import classifier_config
from bert_tutorial.recipes.sentiment_data import read_labelled_file


def run(capsys, *args):
    """``python -m bert_tutorial ARGS`` in this process: the exit code and the one ``error:`` line (or '')."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    return code, errors[0] if errors else ''


def refused(capsys, match, *args):
    code, error = run(capsys, *args)
    assert code == 2 and re.search(match, error), error
    return error


def write(path, text, encoding='utf-8'):
    path.write_bytes(text.encode(encoding))
    return path


# ---- item 3: files parsed loosely ------------------------------------------------------------------------------------

def test_a_quote_in_a_tsv_text_is_text_and_merges_no_rows(tmp_path):
    """The hostile test's file: a `"` opened one text and closed a later one; 32 rows were read as 27, with labels
    inside the texts. A .tsv has no quoting: each line is a row."""
    rows = [(f'{" ".join(w for w, _ in toy_reviews(1, seed=i))} {i}', str(i % 2)) for i in range(32)]
    rows[3] = ('"the best movie, ever', '1')
    rows[8] = ('a dull plot, said "everyone"', '0')
    rows[9] = ('awful" fun', '1')
    path = write(tmp_path / 'a.tsv', 'text\tlabel\n' + ''.join(f'{t}\t{label}\n' for t, label in rows))
    assert read_labelled_file(path) == rows


@pytest.mark.parametrize('content, match', [
    # an unquoted comma: the row had 3 fields and 'but bad' became a third class
    ('text,label\ngreat fun,1\ngood, but bad,0\n',
     r"a.csv, line 3: 3 fields, but the header \(line 1\) has 2 .*comma"),
    ('text,label\ngreat fun,1\ndull\n', r'a.csv, line 3: 1 field, but the header \(line 1\) has 2'),
    ('text\tlabel\ngreat fun\t1\tpositive\n', r'a.tsv, line 2: 3 fields, but the header \(line 1\) has 2 .*tab'),
    # a duplicate column silently used its last occurrence (inverted labels)
    ('text,label,label\ngood,1,0\n', r"a.csv, line 1: the header names the column 'label' twice"),
    ('{"text": "good", "label": 1, "label": 0}\n', r"a.jsonl, line 1: the key 'label' is there twice"),
    # non-scalar labels became classes like "['positive']"
    ('{"text": "good", "label": "positive"}\n{"text": "bad", "label": ["positive"]}\n',
     r"a.jsonl, line 2: the 'label' must be a string or an integer .*, got an array \[\"positive\"\]"),
    ('{"text": "good", "label": {"a": 1}}\n', r"a.jsonl, line 1: the 'label' must be .* got an object"),
    ('{"text": "good", "label": 0.5}\n', r"a.jsonl, line 1: the 'label' must be .* got a number 0.5"),
    ('{"text": "good", "label": null}\n', r"a.jsonl, line 1: the 'label' must be .* got null"),
    ('{"text": "good", "label": true}\n', r"a.jsonl, line 1: the 'label' must be .* got true"),
    ('["good", 1]\n', r'a.jsonl, line 1: expected a JSON object .*got an array'),
    # a .tsv written with CSV quoting: its quotes would stay in the text
    ('text\tlabel\nplain\t0\n"say ""hi"""\t1\n', r'a.tsv, line 3: .*quoted as in CSV'),
    # unbalanced quotes
    ('text,label\ngood,1\n"a dull plot,0\nawful,0\n', r'a.csv, line 3: a quote opened here is never closed'),
    ('text,label\ngood,1\n"great" fun,1\n', r'a.csv, line 3: .*quote'),
    ('text,label\ngood,1\n"a dull\nplot" and "more,0\n', r'a.csv, line 4 \(in the row that starts on line 3\):'),
])
def test_rows_that_do_not_fit_the_header_name_the_file_and_line(tmp_path, content, match):
    name = 'a.jsonl' if content.startswith(('{', '[')) else 'a.tsv' if '\t' in content else 'a.csv'
    with pytest.raises(ValueError, match=match):
        read_labelled_file(write(tmp_path / name, content))


def test_a_long_field_is_read_whole(tmp_path):
    """Over csv's default field limit (131,072 characters): a raw ``_csv.Error`` before."""
    long = 'good ' * 40000
    path = write(tmp_path / 'a.csv', f'text,label\n"{long}",1\nbad,0\n')
    assert read_labelled_file(path) == [(long, '1'), ('bad', '0')]
    import csv
    assert csv.field_size_limit() == 131072  # the process-wide limit is left as it was


@pytest.mark.parametrize('name, content', [
    ('a.csv', 'text,label\ngood,1\nbad,0\n'),
    ('a.tsv', 'text\tlabel\ngood\t1\nbad\t0\n'),
    ('a.jsonl', '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n'),
])
def test_a_utf8_bom_is_read_as_utf8(tmp_path, name, content):
    assert read_labelled_file(write(tmp_path / name, content, 'utf-8-sig')) == [('good', '1'), ('bad', '0')]


def test_multiline_csv_fields_count_physical_lines_and_are_reported(tmp_path, caplog):
    path = write(tmp_path / 'a.csv', 'text,label\n"good\nfun",1\nbad,0\n')
    with caplog.at_level(logging.WARNING):
        assert read_labelled_file(path) == [('good\nfun', '1'), ('bad', '0')]
    assert 'a.csv: 1 row spans several lines' in caplog.text and 'line 2' in caplog.text
    write(path, 'text,label\n"good\nfun",1\nbad\n')
    with pytest.raises(ValueError, match=r'a.csv, line 4: 1 field'):
        read_labelled_file(path)


def test_a_u2028_inside_a_json_string_does_not_split_the_line(tmp_path):
    path = write(tmp_path / 'a.jsonl', '{"text": "good\u2028fun", "label": 1}\n{"text": "bad", "label": 0}\n')
    assert read_labelled_file(path) == [('good\u2028fun', '1'), ('bad', '0')]


# ---- item 19: messages that misled --------------------------------------------------------------------------------

@pytest.mark.parametrize('name, content, match', [
    ('a.jsonl', '{"text": 5, "label": 1}\n', r"a.jsonl, line 1: the 'text' must be a string, got a number 5"),
    ('a.csv', 'text,label\ngood,1\nfun\n', r'a.csv, line 3: 1 field, but the header \(line 1\) has 2'),
    ('a.csv', '', r'a.csv is empty: expected a header line naming the columns'),
    ('a.tsv', '\n\n', r'a.tsv is empty: expected a header line naming the columns'),
])
def test_messages_say_what_is_wrong(tmp_path, name, content, match):
    with pytest.raises(ValueError, match=match):
        read_labelled_file(write(tmp_path / name, content))


def test_a_folder_given_as_a_file_is_called_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'is a folder, not a file: expected a .csv, .tsv or .jsonl file'):
        read_labelled_file(tmp_path)


# ---- CLI fixtures -------------------------------------------------------------------------------------------------

def save_classifier(tiny_bert, tiny_vocab, folder, labels, columns=None):
    net = BERTClassifier(tiny_bert, len(labels), pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    extra = {'columns': columns} if columns else {}
    return save_model(folder, net, tiny_vocab, classifier_config(net, 32, labels, **extra))


@pytest.fixture
def single(tiny_bert, tiny_vocab, tmp_path):
    """A single-sentence classifier as finetune saves it (its columns recorded)."""
    return save_classifier(tiny_bert, tiny_vocab, tmp_path / 'single', ['negative', 'positive'],
                           ['text', None, 'label'])


@pytest.fixture
def pair(tiny_bert, tiny_vocab, tmp_path):
    return save_classifier(tiny_bert, tiny_vocab, tmp_path / 'pair', ['other', 'same'], ['text', 'text_pair', 'label'])


@pytest.fixture
def encoder(tiny_bert, tiny_vocab, tmp_path):
    """A tiny pre-trained encoder folder: finetune --model reads it like pretrain's output."""
    return save_model(tmp_path / 'enc', tiny_bert, tiny_vocab, {'model_type': 'encoder', 'encoder': tiny_bert.config})


def test_predict_input_errors_say_what_the_path_is(single, tmp_path, capsys):
    refused(capsys, rf'--input: {tmp_path} is a folder, not a file: expected a text file, one sentence a line',
            'predict', '--model-dir', single, '--input', tmp_path)
    refused(capsys, r'config.json is a file, not a folder: expected a saved bert_tutorial model',
            'predict', '--model-dir', single / 'config.json', 'good')
    write(tmp_path / 's.txt', 'good fun\na dull plot\ncaf\xe9 awful\n', 'latin-1')
    refused(capsys, r's.txt, line 3: not utf-8 \(invalid continuation byte at byte offset 24\)',
            'predict', '--model-dir', single, '--input', tmp_path / 's.txt')


def test_predict_stdin_that_is_not_utf8_names_the_line(single, monkeypatch, capsys):
    import io
    monkeypatch.setattr('sys.stdin', io.TextIOWrapper(io.BytesIO('good\ncaf\xe9\n'.encode('latin-1'))))
    refused(capsys, r'standard input, line 2: not utf-8', 'predict', '--model-dir', single, '-')


def test_predict_reads_a_bom_and_keeps_a_u2028_in_its_line(single, tmp_path, capsys):
    write(tmp_path / 's.txt', 'good fun\na dull\u2028plot\n', 'utf-8-sig')
    assert main(['predict', '--model-dir', str(single), '--input', str(tmp_path / 's.txt'), '--json']) == 0
    texts = [json.loads(line)['text'] for line in capsys.readouterr().out.splitlines()]
    assert texts == ['good fun', 'a dull\u2028plot']


def test_evaluate_data_that_is_a_folder(single, tmp_path, capsys):
    refused(capsys, rf'{tmp_path} is a folder, not a file', 'evaluate', '--model-dir', single, '--data', tmp_path)


# ---- item 6: labels of the file unknown to the model --------------------------------------------------------------

def test_evaluate_refuses_labels_the_model_does_not_have(tiny_bert, tiny_vocab, tmp_path, capsys):
    """A model of classes '1' and '2' and a file labelled 0/1: every row was mapped to '1' (0 as an index, 1 as a
    name), accuracy 0.19 and no warning."""
    model = save_classifier(tiny_bert, tiny_vocab, tmp_path / 'm', ['1', '2'], ['text', None, 'label'])
    rows = toy_reviews(12, seed=3)
    write(tmp_path / 'd.csv', 'text,label\n' + ''.join(f'{t},{label}\n' for t, label in rows))
    refused(capsys, r"d.csv: the labels \['0'\] are not classes of the model \['1', '2'\] \(the file's labels: "
                    r"\['0', '1'\]; first on line \d+\)",
            'evaluate', '--model-dir', model, '--data', tmp_path / 'd.csv')
    # the same file labelled as the model's classes: every row scored as its own class
    write(tmp_path / 'd.csv', 'text,label\n' + ''.join(f'{t},{label + 1}\n' for t, label in rows))
    assert main(['evaluate', '--model-dir', str(model), '--data', str(tmp_path / 'd.csv'),
                 '--output', str(tmp_path / 'r.json')]) == 0
    report = json.loads((tmp_path / 'r.json').read_text())
    assert [sum(r) for r in report['confusion']] == [sum(1 for _, label in rows if label == c) for c in (0, 1)]


def test_evaluate_still_takes_indices_of_named_classes(single, tmp_path, capsys):
    write(tmp_path / 'd.csv', 'text,label\ngood fun,1\na dull plot,0\ngreat,positive\nawful,negative\nbad,2\n')
    refused(capsys, r"d.csv: the labels \['2'\] are not classes of the model \['negative', 'positive'\] nor their "
                    r"indices 0-1 .*first on line 6", 'evaluate', '--model-dir', single, '--data', tmp_path / 'd.csv')
    write(tmp_path / 'd.csv', 'text,label\ngood fun,1\na dull plot,0\ngreat,positive\nawful,negative\n')
    assert main(['evaluate', '--model-dir', str(single), '--data', str(tmp_path / 'd.csv'),
                 '--output', str(tmp_path / 'r.json')]) == 0
    assert [sum(r) for r in json.loads((tmp_path / 'r.json').read_text())['confusion']] == [2, 2]


# ---- item 8: other input let through ------------------------------------------------------------------------------

def finetune_args(encoder, tmp_path, train, *more):
    return ('finetune', '--model', encoder, '--train', train, '--out', tmp_path / 'out', '--epochs', '1',
            '--max-len', '16', '--batch-size', '4', '--no-progress', *more)


def labelled_csv(path, rows, header=('text', 'label')):
    import csv
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_finetune_refuses_text_that_tokenizes_to_nothing(encoder, tmp_path, capsys):
    rows = [(t, str(label)) for t, label in toy_reviews(20)]
    rows[6] = ('\x00\u200b', '1')  # not whitespace to str.strip, nothing to BERT's tokenizer
    train = labelled_csv(tmp_path / 't.csv', rows)
    refused(capsys, r"t.csv, line 8: the 'text' has no word the tokenizer keeps \('\\x00\\u200b'\)",
            *finetune_args(encoder, tmp_path, train))
    pairs = [(t, 'the plot', label) for t, label in rows]
    pairs[6] = ('good', '\u0301', '1')  # a lone combining accent: stripped by the lower-casing tokenizer
    train = labelled_csv(tmp_path / 'p.csv', pairs, ('text', 'text_pair', 'label'))
    refused(capsys, r"p.csv, line 8: the 'text_pair' has no word the tokenizer keeps",
            *finetune_args(encoder, tmp_path, train, '--text-pair-column', 'text_pair'))


def test_evaluate_refuses_text_that_tokenizes_to_nothing_naming_the_line(single, tmp_path, capsys):
    write(tmp_path / 'd.csv', 'text,label\ngood,1\n\u200b,0\n')
    refused(capsys, r"d.csv, line 3: the 'text' has no word the tokenizer keeps",
            'evaluate', '--model-dir', single, '--data', tmp_path / 'd.csv')


def test_pair_and_single_sentence_models_refuse_the_other_input(single, pair, tmp_path, capsys):
    refused(capsys, r'--pairs: .*single is a single-sentence model', 'predict', '--model-dir', single, '--pairs',
            'good\tfun')
    refused(capsys, r"pair is a sentence-pair model .*--pairs", 'predict', '--model-dir', pair, 'good fun')
    write(tmp_path / 'p.csv', 'text,text_pair,label\ngood,fun,same\n')
    refused(capsys, r'--text-pair-column: .*single is a single-sentence model',
            'evaluate', '--model-dir', single, '--data', tmp_path / 'p.csv', '--text-pair-column', 'text_pair')
    refused(capsys, r'pair is a sentence-pair model: .*movie-reviews',
            'evaluate', '--model-dir', pair, '--data', 'movie-reviews')
    # the right input is still taken
    assert main(['predict', '--model-dir', str(pair), '--pairs', 'good\tfun']) == 0
    assert capsys.readouterr().out.split('\t')[0] in ('other', 'same')


@pytest.mark.parametrize('flags, first, second, value', [
    (('--text-pair-column', 'label'), 'text_pair_column', 'label_column', 'label'),  # the label fed into the input
    (('--text-pair-column', 'text'), 'text_column', 'text_pair_column', 'text'),
    (('--label-column', 'text'), 'text_column', 'label_column', 'text'),
])
def test_a_column_used_twice_is_refused(encoder, single, tmp_path, capsys, flags, first, second, value):
    train = labelled_csv(tmp_path / 't.csv', [(t, str(label)) for t, label in toy_reviews(20)])
    flag = {name: '--' + name.replace('_', '-') for name in (first, second)}
    refused(capsys, rf"{first} \({flag[first]}\) and {second} \({flag[second]}\) are both '{value}'",
            *finetune_args(encoder, tmp_path, train, *flags))
    refused(capsys, rf"{flag[first]} and {flag[second]} are both '{value}'",
            'evaluate', '--model-dir', single, '--data', train, *flags)


@pytest.mark.parametrize('rows, flags, match', [
    # 2 rows, 10% held out: the other row, one class, was all the training data
    ([('good fun', 'positive'), ('a dull plot', 'negative')], (),
     r"t.csv: after validation_fraction \(--validation-fraction\) 0.1 is held out, the 1 training example has one "
     r"class \('(positive|negative)'\)"),
    ([('good fun', 'positive'), ('a dull plot', 'negative'), ('awful', 'negative')],
     ('--validation-fraction', '0.9'),
     r't.csv: validation_fraction \(--validation-fraction\) 0.9 holds out all 3 examples: none is left to train on'),
    (list(zip(['good fun', 'a dull plot', 'great', 'awful', 'fun'] * 4, ['positive', 'negative'] * 10)),
     ('--validation-fraction', '0', '--select', 'last', '--max-train', '1'),
     r"t.csv: the 1 training example that max_train \(--max-train\) 1 keeps has one class"),
])
def test_a_training_split_of_one_class_is_refused(encoder, tmp_path, capsys, rows, flags, match):
    train = labelled_csv(tmp_path / 't.csv', rows)
    refused(capsys, match, *finetune_args(encoder, tmp_path, train, *flags))


@pytest.mark.parametrize('fraction, match', [
    (0.999, r'movie-reviews: validation_fraction \(--validation-fraction\) 0.999 holds out all 10162 examples: none '
            r'is left to train on; lower it$'),
    (0.001, r'movie-reviews: validation_fraction \(--validation-fraction\) 0.001 holds out no example'),
])
def test_a_held_out_split_of_the_built_in_corpus_that_leaves_nothing(fraction, match):
    """By movie: 0.999 of the 406 training movies rounds to all of them, 0.001 to none ("examples is empty")."""
    from bert_tutorial.recipes.finetuning import FinetuneConfig, load_examples
    with pytest.raises(ValueError, match=match):
        load_examples(FinetuneConfig(validation_fraction=fraction))


def test_a_label_absent_from_training_names_the_line_of_the_validation_file(encoder, tmp_path, capsys):
    train = labelled_csv(tmp_path / 't.csv', [(t, str(label)) for t, label in toy_reviews(20)])
    validation = write(tmp_path / 'v.csv', 'text,label\ngood,1\n"a dull\nplot",0\nawful,2\n')
    refused(capsys, r"v.csv, line 5: label '2' is not a class of the training data \['0', '1'\]",
            *finetune_args(encoder, tmp_path, train, '--validation', validation))


def test_finetune_on_a_file_without_a_test_file_reports_the_validation_accuracy(encoder, tmp_path, capsys):
    """--train with a validation split and no --test: the summary formatted a test accuracy of None (a raw
    TypeError after training)."""
    train = labelled_csv(tmp_path / 't.csv', [(t, str(label)) for t, label in toy_reviews(20)])
    assert main([str(a) for a in finetune_args(encoder, tmp_path, train, '--validation-fraction', '0.5')]) == 0
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['test_accuracy'] is None
    assert (f"validation accuracy {metrics['validation_accuracy']:.4f} of epoch 0, the one kept (no test data) after "
            '1 epoch(s)'
            in capsys.readouterr().out)
