"""Fine-tuning on your own files: any number of classes, sentence pairs, a validation split, the best epoch."""
import csv
import json
import random
import sys
from pathlib import Path

import conftest
import mxnet as mx
import numpy as np
import pytest
from conftest import toy_reviews
from mxnet import gluon

from bert_tutorial import BERTClassifier, FinetuneConfig, finetune, train_loop
from bert_tutorial.recipes.sentiment_data import class_order, encode_labels, read_rotten_tomatoes, sentiment_loader
from bert_tutorial.tutorial import train as train_module


def write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_class_order_and_labels_absent_from_training():
    assert class_order(['rotten', 'fresh', 'plot', 'fresh']) == ['fresh', 'plot', 'rotten']
    assert class_order(['10', '2', '-1', '2']) == ['-1', '2', '10']  # integers: numerically
    rows = [('a', 'fresh'), ('b', 'meh')]
    with pytest.raises(ValueError, match=r"dev.csv, example 2: label 'meh' is not a class of the training data"):
        encode_labels(rows, ['fresh', 'rotten'], 'dev.csv')


@pytest.mark.parametrize('changes, match', [
    (dict(validation='v.csv'), r'validation \(--validation\) and test \(--test\) files go with a train'),
    (dict(validation_fraction=0.0), r"select \(--select\) 'best' needs validation data.*select \(--select\) 'last'"),
    (dict(validation_fraction=1.0), r'validation_fraction \(--validation-fraction\) must be 0 or in \[1.2e-38, 1\)'),
    (dict(select='first'), r"select \(--select\) must be one of 'last', 'best'"),
])
def test_bad_data_settings(changes, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**changes).check()


@pytest.mark.slow
def test_three_classes_from_a_file_with_a_validation_split_and_the_best_epoch(tmp_path):
    """Fresh, rotten and plot snippets of the built-in corpus as three classes."""
    rng = random.Random(0)
    rows = read_rotten_tomatoes()
    by = {c: [r['text'] for r in rows if r['category'] == c and r['text'].strip()] for c in ('fresh', 'rotten', 'plot')}
    # 80 snippets a class (the smallest size at which 2 epochs learn well past chance; batches of 16 for steps)
    examples = [(t, c) for c in by for t in rng.sample(by[c], 80)]
    rng.shuffle(examples)
    train = write_csv(tmp_path / 'train.csv', ['text', 'label'], examples[:180])
    test = write_csv(tmp_path / 'test.csv', ['text', 'label'], examples[180:])
    result = finetune(FinetuneConfig(train=str(train), test=str(test), validation_fraction=0.2, select='best',
                                     epochs=2, max_len=48, batch_size=16, lr=1e-4, out=str(tmp_path / 'out'),
                                     progress=False))
    m = result.metrics
    assert m['labels'] == ['fresh', 'plot', 'rotten'] and (m['num_train'], m['num_validation']) == (144, 36)
    scores = [h['validation_accuracy'] for h in result.history]
    assert m['selected_epoch'] == int(np.argmax(scores)) and m['validation_accuracy'] == max(scores)
    assert m['test_accuracy'] > 0.5  # chance: 1/3
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['labels'] == ['fresh', 'plot', 'rotten'] and config['num_classes'] == 3
    # evaluate, on the same file, scores the saved (selected) model as the recipe did
    out = conftest.run_cli('evaluate', '--model-dir', str(tmp_path / 'out'), '--data', str(test))
    report = json.loads((tmp_path / 'out' / 'evaluation.json').read_text())
    # the same model and file in other batches: at most one near-tie example may round to the other side
    assert report['accuracy'] == pytest.approx(m['test_accuracy'], abs=1.5 / 60), out.stdout
    assert report['labels'] == ['fresh', 'plot', 'rotten'] and sum(map(sum, report['confusion'])) == 60


@pytest.mark.slow
def test_sentence_pairs_learn_a_relation_between_the_two_texts(tmp_path):
    """Is B A's words in another order, or another snippet's? Both Bs are shuffled snippets of the built-in corpus,
    so only B's relation to A (the pair, with its segment ids) tells the label."""
    rng = random.Random(0)
    texts = [r['text'] for r in read_rotten_tomatoes() if r['category'] in ('fresh', 'rotten')
             and len(r['text'].split()) >= 6]
    rng.shuffle(texts)
    pairs = []
    for i, a in enumerate(texts[:220]):  # 160 to train on (2 epochs learn it: ~0.97 measured), 60 to test
        same = rng.random() < 0.5
        words = (a if same else texts[220 + i]).split()
        rng.shuffle(words)
        pairs.append((a, ' '.join(words), 'same' if same else 'other'))
    header = ['text', 'text_pair', 'label']
    train = write_csv(tmp_path / 'train.csv', header, pairs[:160])
    test = write_csv(tmp_path / 'test.csv', header, pairs[160:])
    result = finetune(FinetuneConfig(train=str(train), test=str(test), text_pair_column='text_pair', epochs=2,
                                     max_len=64, lr=1e-4, batch_size=16, out=str(tmp_path / 'out'), progress=False))
    assert result.metrics['labels'] == ['other', 'same']
    assert result.metrics['test_accuracy'] > 0.8  # chance 0.5; 60 test pairs
    lines = conftest.run_cli('predict', '--model-dir', str(tmp_path / 'out'), '--pairs', '--json', '-',
                             stdin=f'{pairs[200][0]}\t{pairs[200][1]}\n').stdout.splitlines()
    assert json.loads(lines[0])['label'] == pairs[200][2]


@pytest.mark.parametrize('on_disk', [False, True])
def test_select_best_keeps_the_parameters_of_the_best_validation_epoch(tiny_bert, tiny_vocab, tmp_path, monkeypatch,
                                                                        on_disk):
    import gluonnlp as nlp
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    train = sentiment_loader(toy_reviews(64, seed=1), tok, tiny_vocab, 16, 16, shuffle=True)
    net = BERTClassifier(tiny_bert, 2)
    net.classifier.initialize(mx.init.Normal(0.02))
    scripted = iter([0.6, 0.9, 0.7])  # the validation accuracies of epochs 0, 1, 2
    monkeypatch.setattr(train_module, 'evaluate_accuracy', lambda *a: next(scripted))
    snapshots = []

    def snapshot(record):
        if 'validation_accuracy' in record:
            snapshots.append({k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()})

    history = train_loop(net, train, train, 3, 1e-2, mx.cpu(), gluon.loss.SoftmaxCELoss(), eval_name='Validation',
                         select='best', callback=snapshot, progress=False,
                         checkpoint_dir=tmp_path if on_disk else None)
    assert [h['validation_accuracy'] for h in history] == [0.6, 0.9, 0.7]
    final = {k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()}
    for key, value in final.items():
        np.testing.assert_array_equal(value, snapshots[1][key])
    assert any(not np.array_equal(snapshots[1][k], snapshots[2][k]) for k in final)  # the last epoch differed


# ---- your own files end to end, in-process on a tiny encoder: every combination of held-out data ---------------

def run_cli(capsys, *args):
    """``python -m bert_tutorial ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    from bert_tutorial.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


OWN_DATA_CASES = {
    # name: (extra flags, which score the summary reports, held out of train, files used)
    'train only': ([], 'validation', 0.1, ()),
    'train, validation file': (['--validation', '{validation}'], 'validation', 0.0, ('validation',)),
    'train, test file': (['--test', '{test}'], 'test', 0.1, ('test',)),
    'train, validation and test files': (['--validation', '{validation}', '--test', '{test}'], 'test', 0.0,
                                         ('validation', 'test')),
    'train only, nothing held out': (['--validation-fraction', '0', '--select', 'last'], 'training', 0.0, ()),
    'train, test file, nothing held out': (['--test', '{test}', '--validation-fraction', '0', '--select', 'last'],
                                           'test', 0.0, ('test',)),
}


@pytest.mark.parametrize('case', list(OWN_DATA_CASES))
def test_own_files_end_to_end_in_every_combination(case, tiny_encoder_dir, tmp_path, capsys, caplog):
    """Exit 0 and a summary naming the score it reports (test, else the kept epoch's validation, else training
    accuracy); the log and metrics.json name the files used and never the built-in corpus; the folder holds the
    model alone, and evaluate on the same file scores the saved model as the run did."""
    import logging

    from conftest import write_reviews
    caplog.set_level(logging.INFO)
    flags, scored, held_out, used = OWN_DATA_CASES[case]
    files = {'train': write_reviews(tmp_path / 'train.csv', 48, seed=1),
             'validation': write_reviews(tmp_path / 'dev.csv', 16, seed=2),
             'test': write_reviews(tmp_path / 'test.csv', 16, seed=3)}
    flags = [f.format(**files) for f in flags]
    out = tmp_path / 'run'
    code, stdout, stderr = run_cli(capsys, 'finetune', '--model', tiny_encoder_dir, '--train', files['train'], *flags,
                                   '--epochs', 2, '--batch-size', 8, '--max-len', 16, '--lr', '1e-3', '--out', out,
                                   '--no-progress', '--log-interval', 100)
    assert code == 0, stderr
    text = (out / 'metrics.json').read_text()
    m = json.loads(text)
    assert 'movie-reviews' not in text and m['config']['data'] is None
    expected_data = {'train': str(files['train']), 'validation': None, 'test': None, 'validation_fraction': held_out}
    expected_data.update({k: str(files[k]) for k in used})
    assert m['data'] == expected_data
    assert (m['num_validation'] > 0) == (scored == 'validation' or 'validation' in used or held_out > 0)
    assert (m['test_accuracy'] is None) == ('test' not in used)
    log = '\n'.join(r.getMessage() for r in caplog.records)
    assert f"training file {files['train']}" in log and 'movie-reviews' not in log
    for k in ('validation', 'test'):
        assert (f'{k} file {files[k]}' in log) == (k in used)
        n = m[f'num_{k}']  # all below 30 here: each says how little its accuracy says
        assert (f'only {n} {k} example(s)' in log) == (n > 0)

    summary = stdout.strip().splitlines()[-1]
    kept = m['selected_epoch']
    if scored == 'test':
        assert summary.startswith(f"test accuracy {m['test_accuracy']:.4f}")
    elif scored == 'validation':
        scores = [h['validation_accuracy'] for h in m['history']]
        assert kept == int(np.argmax(scores)) and m['validation_accuracy'] == max(scores)  # select best
        assert summary.startswith(f"validation accuracy {m['validation_accuracy']:.4f} of epoch {kept}, the one kept "
                                  '(no test data)')
    else:
        assert m['validation_accuracy'] is None and kept == 1
        assert summary.startswith(f"training accuracy {m['history'][1]['train_accuracy']:.4f} (epoch 1")
        assert 'nothing was held out' in summary
    assert summary.endswith(f'model saved in {out}')
    # Lean: the model, its config and vocabulary, metrics.json (and the out folder's lock).
    assert {p.name for p in out.iterdir()} == {'.lock', 'config.json', 'model.params', 'vocab.json', 'metrics.json'}

    # The saved model scores a given file as the run did; 1 example of slack: the run scored it on the C++
    # kernels, evaluate on MXNet's operators (float32 round-off may flip a near-tie).
    for k in used:
        report = tmp_path / f'{k}.json'
        assert run_cli(capsys, 'evaluate', '--model-dir', out, '--data', files[k], '--output', report)[0] == 0
        accuracy = json.loads(report.read_text())['accuracy']
        assert accuracy == pytest.approx(m[f'{k}_accuracy'], abs=1 / 16 + 1e-9)


def test_the_summary_of_a_run_without_held_out_data_is_its_training_accuracy():
    """The summary's three forms, from metrics alone (a 0.4 metrics.json has no train_accuracy: read the history)."""
    from bert_tutorial.recipes.finetuning import FinetuneResult
    history = [{'train_accuracy': 0.5, 'validation_accuracy': 0.6},
               {'train_accuracy': 0.75, 'validation_accuracy': 0.7}]
    base = {'seconds': 12.4, 'selected_epoch': 1}

    def summary(**metrics):
        return FinetuneResult(None, None, history, dict(base, **metrics), Path('o')).summary()
    assert summary(test_accuracy=0.8, validation_accuracy=0.7) == (
        'test accuracy 0.8000 (epoch 1 kept, validation accuracy 0.7000) after 2 epoch(s), 12 s; model saved in o')
    assert summary(test_accuracy=None, validation_accuracy=0.7).startswith(
        'validation accuracy 0.7000 of epoch 1, the one kept (no test data) after 2 epoch(s)')
    assert summary(test_accuracy=None, validation_accuracy=None).startswith(
        'training accuracy 0.7500 (epoch 1, measured while training; nothing was held out')


def test_a_run_on_own_files_records_a_config_its_command_reproduces():
    """metrics.json records data=None for a run on the user's files; the figures page's command for it (--train,
    no --data) gives that config back, and FinetuneConfig accepts it."""
    import dataclasses
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
    from record_run import command_of

    from bert_tutorial.cli import build_parser
    config = FinetuneConfig(train='mine.csv', test='test.csv', data=None, epochs=2)
    config.check()
    command = command_of(dataclasses.asdict(config))
    assert command == 'python -m bert_tutorial finetune --train mine.csv --test test.csv --epochs 2'
    args = build_parser().parse_args(command.split()[3:])
    rebuilt = FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)})
    assert dataclasses.replace(rebuilt, data=None) == config  # finetune records data=None for it, as here
    with pytest.raises(ValueError, match=r"data \(--data\) must be one of 'movie-reviews', 'imdb', got None"):
        FinetuneConfig(data=None).check()
