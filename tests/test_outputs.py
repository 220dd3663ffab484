"""Where the commands write: never over an input, a model's files or (without --overwrite) another file; clear errors
before the work for outputs that cannot be written, and one line after it for writes that fail (a full disk), with
no temporaries left; settings (seed, max_len, the distributed timeout) checked up front."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import mxnet as mx
import pytest
from conftest import toy_reviews

from bert_tutorial import BERTClassifier, save_model
from bert_tutorial.cli import main
from bert_tutorial.recipes.hub import classifier_config


class NoWork(Exception):
    """Raised by a stand-in for the first piece of work: reaching it means a check came too late."""


def no_work(*args, **kwargs):
    raise NoWork('work started before the check')


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture
def model_dir(tiny_bert, tiny_vocab, tmp_path):
    net = BERTClassifier(tiny_bert, 2, pooling='mean')
    net.classifier.initialize(mx.init.Normal(0.5))
    return save_model(tmp_path / 'm', net, tiny_vocab, classifier_config(net, 32, ['negative', 'positive']))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / 'd.csv'
    path.write_text('text,label\nthe movie was good,positive\na dull plot,0\ngreat fun,1\nawful,negative\n')
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- item 2: evaluate --output and export --out never overwrite an input or a model ---------------------------

def test_evaluate_never_writes_over_its_data_or_a_models_files(model_dir, data, tmp_path, capsys):
    model_before, data_before = snapshot(model_dir), data.read_bytes()
    other = tmp_path / 'other'  # another saved model: its files are refused too
    other.mkdir()
    (other / 'config.json').write_text('{}')
    (other / 'model.params').write_bytes(b'weights')
    for output, message in [(data, 'is an input of this command'),
                            (model_dir / 'model.params', f'lies inside the model folder {model_dir}'),
                            (model_dir / 'config.json', f'lies inside the model folder {model_dir}'),
                            (model_dir / 'new.json', f'lies inside the model folder {model_dir}'),
                            (other / 'config.json', f'lies inside the model folder {other}')]:
        for extra in ([], ['--overwrite']):  # never, not even with --overwrite
            code, out, err = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', output,
                                 *extra)
            assert code == 2 and err.startswith('error: --output: ') and message in err, err
            assert 'accuracy' not in out  # refused before scoring
    assert snapshot(model_dir) == model_before and data.read_bytes() == data_before
    assert (other / 'config.json').read_text() == '{}'


def test_evaluate_replaces_another_file_only_with_overwrite(model_dir, data, tmp_path, capsys):
    report = tmp_path / 'report.json'
    report.write_text('mine')
    code, _, err = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', report)
    assert code == 2 and f'--output: {report} exists; pass --overwrite to replace it' in err
    assert report.read_text() == 'mine'
    code, out, _ = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', report,
                       '--overwrite')
    assert code == 0 and json.loads(report.read_text())['examples'] == 4
    for _ in range(2):  # its own default report in the model folder is replaced freely
        code, out, _ = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data)
        assert code == 0 and json.loads((model_dir / 'evaluation.json').read_text())['examples'] == 4
    assert not list(model_dir.glob('.*.part'))


def test_export_never_writes_into_the_model_or_another_model(model_dir, tmp_path, capsys):
    from bert_tutorial import load_model
    before = snapshot(model_dir)
    for out, message in [(model_dir, 'is an input of this command'),
                         (model_dir / 'checkpoints', f'lies inside the model folder {model_dir}')]:
        for extra in ([], ['--overwrite']):
            code, _, err = run(capsys, 'export', '--model-dir', model_dir, '--out', out, *extra)
            assert code == 2 and err.startswith('error: --out: ') and message in err, err
    assert snapshot(model_dir) == before
    load_model(model_dir, model_type='classifier')  # still whole
    other = tmp_path / 'other'  # another classifier
    shutil.copytree(model_dir, other)
    code, _, err = run(capsys, 'export', '--model-dir', model_dir, '--out', other, '--overwrite')
    assert code == 2 and f'--out: {other} holds a saved model that is not an export; choose another path' in err
    assert snapshot(other) == before
    user = tmp_path / 'user'
    user.mkdir()
    (user / 'notes.txt').write_text('mine')
    code, _, err = run(capsys, 'export', '--model-dir', model_dir, '--out', user, '--overwrite')
    assert code == 2 and 'is a folder with files in it; choose a new or empty folder' in err
    assert snapshot(user) == {user.relative_to(user) / 'notes.txt': b'mine'}


def test_export_replaces_an_earlier_export_only_with_overwrite(model_dir, tmp_path, capsys):
    from bert_tutorial import load_model
    out = tmp_path / 'export'
    assert run(capsys, 'export', '--model-dir', model_dir, '--out', out)[0] == 0
    code, _, err = run(capsys, 'export', '--model-dir', model_dir, '--out', out)
    assert code == 2 and f'--out: {out} holds an earlier export; pass --overwrite' in err
    assert run(capsys, 'export', '--model-dir', model_dir, '--out', out, '--overwrite')[0] == 0
    assert load_model(out)[2]['model_type'] == 'exported_classifier'
    for _ in range(2):  # the default, MODEL_DIR/export, is the command's own
        assert run(capsys, 'export', '--model-dir', model_dir)[0] == 0
    assert load_model(model_dir / 'export')[2]['model_type'] == 'exported_classifier'


def test_evaluate_never_replaces_something_that_is_not_a_regular_file(model_dir, data, tmp_path, capsys):
    """A pipe here (as root, /dev/null would be replaced by a file just the same)."""
    import stat
    fifo = tmp_path / 'pipe'
    os.mkfifo(fifo)
    code, _, err = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', fifo, '--overwrite')
    assert (code, err) == (2, f'error: --output: {fifo} is not a regular file; give a file name\n')
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize('command', ['finetune', 'pretrain'])
def test_a_run_never_writes_into_its_input_folder_or_a_hugging_face_checkpoint(command, tiny_bert, tiny_vocab,
                                                                             tmp_path, capsys, monkeypatch):
    from bert_tutorial.recipes import finetuning, pretraining
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    monkeypatch.setattr(pretraining, 'load_corpus', no_work)
    hf = tmp_path / 'hf'
    hf.mkdir()
    for name in ('config.json', 'model.safetensors', 'vocab.txt'):
        (hf / name).write_text('theirs')
    source = tmp_path / 'source'  # finetune's model, pretrain's corpus folder
    if command == 'finetune':
        save_model(source, tiny_bert, tiny_vocab, {'model_type': 'encoder', 'encoder': tiny_bert.config})
    else:
        source.mkdir()
        (source / 'a.txt').write_text('One sentence. Another one.')
    before = snapshot(source)
    flag = '--model' if command == 'finetune' else '--corpus'
    code, _, err = run(capsys, command, flag, source, '--out', source)
    assert (code, err) == (2, f'error: out (--out): {source} is an input of this run ({source}); choose another '
                              'out folder\n')
    for out in (hf, hf / 'run'):
        code, _, err = run(capsys, command, '--out', out)
        assert (code, err) == (2, f'error: out (--out): {out} lies in the Hugging Face checkpoint folder {hf}; '
                                  'choose another out folder\n')
    assert snapshot(source) == before and sorted(p.name for p in hf.iterdir()) == ['config.json',
                                                                                    'model.safetensors', 'vocab.txt']


# ---- item 15: an output of the wrong kind is refused before the work -------------------------------------------

def test_evaluate_output_a_folder_and_export_out_a_file_are_refused_before_the_work(model_dir, data, tmp_path,
                                                                                      capsys, monkeypatch):
    from bert_tutorial.commands import evaluate
    from bert_tutorial.recipes import export
    monkeypatch.setattr(evaluate, 'load_model', no_work)
    monkeypatch.setattr(export, 'load_model', no_work)
    folder = tmp_path / 'reports'
    folder.mkdir()
    code, _, err = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', folder)
    assert (code, err) == (2, f'error: --output: {folder} is a folder; give a file name\n')
    code, _, err = run(capsys, 'evaluate', '--model-dir', model_dir, '--data', data, '--output',
                       tmp_path / 'missing' / 'r.json')
    assert code == 2 and f'--output: the folder {tmp_path / "missing"} does not exist' in err
    file = tmp_path / 'file'
    file.write_text('mine')
    code, _, err = run(capsys, 'export', '--model-dir', model_dir, '--out', file)
    assert (code, err) == (2, f'error: --out: {file} is a file, and a folder goes there; choose another path\n')
    assert file.read_text() == 'mine'


# ---- item 13: out folders that cannot be written, full disks, temporaries of killed writes --------------------

@pytest.mark.parametrize('command', ['finetune', 'pretrain'])
@pytest.mark.parametrize('blocker, message', [
    ('checkpoints', 'checkpoints is a file, and the run writes a folder there'),
    ('model.params/', 'model.params is a folder, and the run writes a file there'),
    ('metrics.json/', 'metrics.json is a folder, and the run writes a file there'),
])
def test_an_out_folder_the_run_cannot_fill_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command,
                                                                       blocker, message):
    from bert_tutorial.recipes import finetuning, pretraining
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    monkeypatch.setattr(pretraining, 'load_corpus', no_work)
    out = tmp_path / 'out'
    out.mkdir()
    if blocker.endswith('/'):
        (out / blocker).mkdir()
    else:
        (out / blocker).write_text('')
    code, _, err = run(capsys, command, '--out', out)
    assert code == 2 and err == f'error: out: {out}/{message}: move it away or choose another out folder\n'


@pytest.mark.parametrize('command', ['finetune', 'pretrain'])
def test_too_little_free_space_for_the_parameters_is_refused_before_training(command, tiny_bert, tiny_vocab, tmp_path,
                                                                             capsys, monkeypatch):
    from collections import namedtuple

    from bert_tutorial import files
    from bert_tutorial.recipes import finetuning, pretraining
    monkeypatch.setattr(finetuning, 'train_loop', no_work)
    monkeypatch.setattr(pretraining, 'pretrain_loop', no_work)
    usage = namedtuple('usage', 'total used free')
    monkeypatch.setattr(files.shutil, 'disk_usage', lambda path: usage(10**9, 10**9 - 1_000, 1_000))
    if command == 'finetune':
        encoder = save_model(tmp_path / 'encoder', tiny_bert, tiny_vocab, {'model_type': 'encoder',
                                                                           'encoder': tiny_bert.config})
        train = tmp_path / 'train.csv'
        train.write_text('text,label\n' + ''.join(f'{t},{y}\n' for t, y in toy_reviews(16)))
        args = ['--model', encoder, '--train', train, '--no-hybridize']
        net = BERTClassifier(tiny_bert, 2, pooling='cls')  # what finetune trains: the encoder, a 2-class output
        net.classifier.initialize()
        net(mx.nd.ones((1, 3)), mx.nd.zeros((1, 3)), mx.nd.array([3]))
    else:
        corpus = tmp_path / 'corpus.txt'
        corpus.write_text('\n\n'.join('. '.join(t for t, _ in toy_reviews(4, seed=d)) + '.' for d in range(20)))
        args = ['--corpus', corpus, '--min-freq', '1', '--units', '16', '--hidden', '32', '--layers', '1']
    code, _, err = run(capsys, command, *args, '--out', tmp_path / 'out')
    what = {'finetune': 'fine-tuning', 'pretrain': 'pre-training'}[command]
    match = re.fullmatch(f'error: out: {tmp_path / "out"} has 0.001 MB free, and {what} writes at least (\\S+) MB '
                         '\\(its parameters, in a checkpoint and the saved model\\): free space or choose another out '
                         'folder\n', err)
    assert code == 2 and match, err
    if command == 'finetune':  # an independent count of the weights
        size = 4 * sum(p.data().size for p in net.collect_params().values())
        assert float(match[1]) == float(f'{2 * size / 1e6:.3g}')
    else:  # a lower bound: the parameters whose shapes MXNet knows before the first batch, the embeddings among them
        embeddings = (18 + 2 + 48) * 16  # 13 words of the corpus and 5 special tokens, 2 segments, 48 positions
        assert float(match[1]) >= 2 * 4 * embeddings / 1e6


def test_a_failed_checkpoint_write_names_the_file_and_leaves_no_temporary(tiny_bert, tmp_path, monkeypatch):
    """MXNet's own failure on a full disk (``FileStream.Write incomplete``), raised where it writes."""
    from mxnet.base import MXNetError

    from bert_tutorial.checkpoint import save_checkpoint
    from bert_tutorial.files import WriteError

    def full(*args, **kwargs):
        raise MXNetError('[12:00:00] src/io/local_filesys.cc:88: Check failed: nwrite == size (0 vs. 4096) : '
                         'FileStream.Write incomplete\nStack trace: ...')

    monkeypatch.setattr(tiny_bert, 'save_parameters', full)
    with pytest.raises(WriteError, match=r'^.*/checkpoints/step-00000003 cannot be written: the file system is full'):
        save_checkpoint(tmp_path, tiny_bert, None, {'step': 3})
    assert list((tmp_path / 'checkpoints').iterdir()) == []


@pytest.mark.slow
def test_finetune_on_a_full_disk_ends_with_one_line_and_no_temporaries(tiny_bert, tiny_vocab, tmp_path):
    """A real failed write: the run's process may not write files past 16 kB (RLIMIT_FSIZE, with SIGXFSZ ignored
    the write fails as on a full disk), less than the 21 kB parameters of the tiny model's checkpoint."""
    import resource
    encoder = save_model(tmp_path / 'encoder', tiny_bert, tiny_vocab, {'model_type': 'encoder',
                                                                       'encoder': tiny_bert.config})
    train = tmp_path / 'train.csv'
    train.write_text('text,label\n' + ''.join(f'{t},{y}\n' for t, y in toy_reviews(32)))
    out = tmp_path / 'out'

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    proc = subprocess.run([sys.executable, '-m', 'bert_tutorial', 'finetune', '--model', str(encoder), '--train',
                           str(train), '--validation-fraction', '0', '--select', 'last', '--epochs', '1',
                           '--batch-size', '8', '--no-progress',
                           '--out', str(out)], preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(f'error: {out}/checkpoints/step-\\d{{8}} cannot be written: the file system is full or '
                        'refused the write \\(MXNet: FileStream.Write incomplete\\)', last), proc.stderr
    assert 'Traceback' not in proc.stderr
    leftovers = [p.name for p in out.rglob('.*') if p.name != '.lock']
    assert leftovers == []


def test_evaluate_and_export_on_a_full_disk_end_with_one_line_and_leave_nothing_half_written(model_dir, data,
                                                                                            tmp_path):
    """As above: evaluate may not write past 300 bytes (its report is longer, its batches' shared-memory arrays
    shorter), export past 16 kB (the tiny model's parameters are 21 kB). The export folder is left empty, so that the
    next try may use it."""
    import resource

    def limit(size):
        def apply():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        return apply

    def cli(size, *args):
        proc = subprocess.run([sys.executable, '-m', 'bert_tutorial', *map(str, args)], preexec_fn=limit(size),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
        return proc.stderr.strip().splitlines()[-1]

    report = tmp_path / 'report.json'
    assert cli(300, 'evaluate', '--model-dir', model_dir, '--data', data, '--output', report) == \
        f'error: {report} cannot be written: File too large'
    out = tmp_path / 'export'
    assert cli(16_000, 'export', '--model-dir', model_dir, '--out', out) == \
        f'error: {out}/model-0000.params cannot be written: the file system is full or refused the write (MXNet: ' \
        'FileStream.Write incomplete)'
    assert list(tmp_path.glob('.*')) == [] and list(out.iterdir()) == []


def test_temporaries_of_killed_writes_are_removed_by_the_next_run(tmp_path):
    from bert_tutorial.files import locked_output, write_atomic
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # its id is in the names of the files a killed write of it would have left
    out = tmp_path / 'out'
    (out / 'checkpoints').mkdir(parents=True)
    stale = [out / 'checkpoints' / f'.best.params.{dead.pid}.part', out / f'.model.params.{dead.pid}.part',
             out / f'.model.{dead.pid}-0000.params']
    kept = [out / 'checkpoints' / f'.best.params.{os.getpid()}.part',  # a live process's: still being written
            out / '.notes.part', out / f'.x.{dead.pid}.partial', out / 'model.params.1.part',  # not its names
            out / 'worker-1' / f'.model.params.{dead.pid}.part']  # another run's folder, with its own lock
    (out / 'worker-1').mkdir()
    for path in stale + kept:
        path.write_text('')
    with locked_output(out):
        pass
    assert [p.exists() for p in stale] == [False] * len(stale)
    assert [p.exists() for p in kept] == [True] * len(kept)
    write_atomic(out / 'a.json', '{}')
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('.a')) == []


# ---- item 10: pretrain's max_len is capped at BERT's positions, as finetune's is ------------------------------

def test_pretrain_caps_max_len_at_the_positions_of_bert(tmp_path, capsys, monkeypatch, caplog):
    from bert_tutorial.recipes import pretraining
    seen = {}

    def model(*args, max_len, **kwargs):  # the first thing whose size max_len sets; stop there
        seen['max_len'] = max_len
        raise NoWork

    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('\n\n'.join('. '.join(' '.join(w for w, _ in toy_reviews(3, seed=d * 10 + s)) for s in range(4))
                                  for d in range(20)))
    monkeypatch.setattr(pretraining, 'BERTPretrainModel', model)
    monkeypatch.setattr(pretraining, 'PretrainingDataset', lambda docs, vocab, max_len, seed: (
        seen.setdefault('dataset', max_len), [])[1])
    with pytest.raises(NoWork):
        main(['pretrain', '--corpus', str(corpus), '--max-len', '100000', '--out', str(tmp_path / 'o'),
              '--min-freq', '1', '--no-progress'])
    assert seen == {'dataset': 512, 'max_len': 512}
    assert 'max_len 100000 is more than BERT has positions for: using 512' in caplog.text
    assert pretraining.PretrainConfig(max_len=512).max_len == pretraining.MAX_POSITIONS


# ---- item 18: seeds outside what numpy and MXNet take, refused up front naming --seed --------------------------

@pytest.mark.parametrize('command', ['finetune', 'pretrain'])
@pytest.mark.parametrize('seed', ['4294967296', '-1', str(2**64)])
def test_a_seed_out_of_range_is_refused_before_any_work(command, seed, capsys, monkeypatch, tmp_path):
    from bert_tutorial.recipes import finetuning, pretraining
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    monkeypatch.setattr(pretraining, 'load_corpus', no_work)
    code, out, err = run(capsys, command, '--seed', seed, '--out', tmp_path / 'o')
    assert (code, out) == (2, '')
    assert err == f'error: seed (--seed) must be an integer in [0, 4294967295], got {seed}\n'


def test_the_largest_seed_is_taken_and_distinct_seeds_stay_distinct():
    """2**32 - 1 is the last seed numpy takes; MXNet's C int wraps 2**32 onto 0, which is why larger ones are
    refused (the same dropout masks as seed 0 would be a silent repeat)."""
    import numpy as np

    from bert_tutorial import FinetuneConfig, PretrainConfig
    from bert_tutorial.tutorial.train import train_loop
    FinetuneConfig(seed=2**32 - 1).check()
    PretrainConfig(seed=2**32 - 1).check()
    np.random.seed(2**32 - 1)
    with pytest.raises(ValueError):
        np.random.seed(2**32)
    draws = []
    for seed in (0, 2**32):  # what the check prevents
        mx.random.seed(seed)
        draws.append(mx.nd.random.uniform(shape=(4,)).asnumpy())
    assert np.array_equal(draws[0], draws[1])
    with pytest.raises(ValueError, match=r'seed must be an integer in \[0, 4294967295\], got 4294967296'):
        train_loop(None, [], None, 1, 1e-3, mx.cpu(), None, seed=2**32)


# ---- item 11: the distributed timeout must be a finite number of seconds, at least 1 -------------------------

@pytest.mark.parametrize('value', ['0', '0.5', '-5', 'nan', 'inf', '', 'soon'])
def test_a_dist_timeout_that_would_end_a_healthy_cluster_or_never_end_is_refused(value, monkeypatch):
    from bert_tutorial.loop import Watchdog
    monkeypatch.setenv('BERT_TUTORIAL_DIST_TIMEOUT', value)
    with pytest.raises(ValueError, match=f"^BERT_TUTORIAL_DIST_TIMEOUT must be a finite number of seconds >= 1, got "
                                         f"'{value}'$"):
        Watchdog().timeout  # noqa: B018 -- reading it is the check
    monkeypatch.setenv('BERT_TUTORIAL_DIST_TIMEOUT', '1.5')
    assert Watchdog().timeout == 1.5


def test_finetune_with_a_zero_dist_timeout_stops_before_joining_the_cluster(tmp_path):
    env = dict(os.environ, DMLC_ROLE='worker', DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT='9', DMLC_NUM_WORKER='2',
               DMLC_NUM_SERVER='1', BERT_TUTORIAL_DIST_TIMEOUT='0')
    proc = subprocess.run([sys.executable, '-m', 'bert_tutorial', 'finetune', '--kvstore', 'dist_sync', '--out',
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: BERT_TUTORIAL_DIST_TIMEOUT must be a finite number of seconds >= 1, got '0'\n"


# ---- found by the second hostile pass (issue 23) ------------------------------------------------------------------

@pytest.mark.parametrize('flag, value', [('--lr', '1e-40'), ('--lr', '1e-300'), ('--bert-dropout', '1e-300'),
                                         ('--warmup-ratio', '1e-45')])
def test_rates_float32_cannot_hold_are_refused_naming_the_flag(capsys, flag, value):
    """MXNet reads rates as float32 and fails in C++ ("Out of range value for lr") on one below its smallest normal
    number: refused up front, naming the flag, before any model loads."""
    from bert_tutorial import cli
    capsys.readouterr()
    code = cli.main(['finetune', flag, value, '--out', 'never-written'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f'error: {flag[2:].replace("-", "_")} ({flag}) must be ') and '1.2e-38' in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_output_path_that_is_a_symlink_loop_is_one_clear_error(tmp_path):
    from bert_tutorial.files import check_out_folder, check_output
    loop = tmp_path / 'loop'
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match=r'--output: .*loop cannot be followed .*symbolic link loop'):
        check_output(loop, '--output')
    with pytest.raises(ValueError, match=r'out \(--out\): .*loop cannot be followed'):
        check_out_folder(loop)
