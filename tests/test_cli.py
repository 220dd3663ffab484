"""The command line end to end, at a small size."""
import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli


def cli(*args, stdin=None, check=True, env=None):
    """``python -m bert_tutorial ARGS`` in a new process (where the process is the point: a kill, the environment
    at start-up, the command's own log lines)."""
    proc = subprocess.run([sys.executable, '-m', 'bert_tutorial', *args], capture_output=True, text=True,
                          input=stdin, timeout=600, env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f'exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}')
    return proc


# The smallest run that exercises the command: 2 batches of short snippets (max_len 32: most fit whole).
SMALL = ('--max-train', '64', '--max-test', '32', '--epochs', '1', '--max-len', '32')


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
    out = tmp_path_factory.mktemp('ft')
    proc = cli('finetune', *SMALL, '--out', str(out), '--no-progress', '--log-interval', '1')
    return out, proc


@pytest.mark.slow
def test_finetune_writes_metrics_and_model(finetuned):
    out, proc = finetuned
    metrics = json.loads((out / 'metrics.json').read_text())
    for key in ('test_accuracy', 'train_samples_per_second', 'seconds', 'num_train', 'num_test', 'config',
                'history'):
        assert key in metrics
    assert metrics['num_train'] == 64 and metrics['num_test'] == 32 and metrics['config']['epochs'] == 1
    assert metrics['config']['model'] == 'all-MiniLM-L6-v2' and metrics['config']['data'] == 'movie-reviews'
    assert 0 <= metrics['test_accuracy'] <= 1 and metrics['train_samples_per_second'] > 0
    assert {'config.json', 'vocab.json', 'model.params'} <= set(os.listdir(out))
    assert 'Batch 0 Accuracy' in proc.stdout and 'Test Accuracy' in proc.stdout
    # what ran and where: the kernels this machine's choice picked (said in accelerate's one log line too), the
    # dropout that ran, versions, CPU
    from bert_tutorial.speed.choice import OPERATORS
    assert set(metrics['kernel_choice']['kernels']) == set(OPERATORS)
    speed = [line.split(': ', 1)[1] for line in proc.stderr.splitlines() if 'bert_tutorial.speed.accelerate:' in line]
    if metrics['kernel_choice']['decided_by'] == 'no C++ kernels':
        assert len(speed) == 1 and speed[0].startswith('speed: no C++ kernels here') and not metrics['kernel_dropout']
    else:
        record = metrics['kernel_choice']  # every chosen kernel has blocks to swap in a BERT
        on = [op for op in OPERATORS if record['kernels'][op]]
        off = [f'{op} (as MatmulLayerNorm)' if op == 'layer_norm' else op for op in OPERATORS if op not in on]
        assert speed == [f"speed: C++ kernels for {', '.join(on)}; MXNet's operators for {', '.join(off)} (the "
                         f"kernels' choice: {record['decided_by']}); dropout: the C++ kernel's masks"]
        assert metrics['kernel_dropout'] is metrics['config']['kernel_dropout'] is True
    import bert_tutorial
    assert metrics['measured']['mxnet'] == __import__('mxnet').__version__ and metrics['measured']['cpu']
    assert metrics['measured']['bert_tutorial'] == bert_tutorial.__version__


@pytest.mark.slow
def test_predict_arguments_and_stdin(finetuned):
    out, _ = finetuned
    line = run_cli('predict', '--model-dir', str(out), 'this movie is so great').stdout.strip()
    label, prob = line.split('\t')
    assert label in ('positive', 'negative') and 0.5 <= float(prob) <= 1
    lines = run_cli('predict', '--model-dir', str(out), '-',
                    stdin='great fun\n\na dull, lifeless mess\n').stdout
    rows = [r.split('\t') for r in lines.strip().splitlines()]
    assert [r[2] for r in rows] == ['great fun', 'a dull, lifeless mess']


def test_clear_errors():
    proc = run_cli('predict', '--model-dir', '/nonexistent/dir', 'hello', check=False)
    assert proc.returncode == 2 and 'does not exist: expected a saved bert_tutorial model' in proc.stderr
    assert proc.stderr.startswith('error: ')
    proc = run_cli('finetune', '--max-len', '2', check=False)
    assert proc.returncode == 2 and 'max_len (--max-len) must be an integer >= 3, got 2' in proc.stderr
    proc = run_cli('finetune', '--data', 'nope', check=False)
    assert proc.returncode == 2 and 'invalid choice' in proc.stderr


@pytest.mark.slow
def test_the_command_runs_the_library_recipe(finetuned, tmp_path):
    """``finetune`` called from Python with the command's settings is the same run as the command (loader worker
    processes change nothing)."""
    from bert_tutorial import FinetuneConfig, finetune

    out, _ = finetuned
    command = json.loads((out / 'metrics.json').read_text())
    # The tutorial's loaders used 4 worker processes: their batches (on cpu_shared) reach the hybridized net too.
    result = finetune(FinetuneConfig(max_train=64, max_test=32, epochs=1, max_len=32, out=str(tmp_path / 'py'),
                                     progress=False, log_interval=1, num_workers=2))
    assert result.metrics['config'] == dict(command['config'], out=str(tmp_path / 'py'), num_workers=2)
    assert result.metrics['test_accuracy'] == command['test_accuracy']
    assert [h['train_loss'] for h in result.history] == [h['train_loss'] for h in command['history']]


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_uninterrupted_result(tmp_path, tiny_model):
    """Kill a run after one of its epoch checkpoints, resume it: same parameters as a run never stopped."""
    import signal
    import time

    import mxnet as mx
    import numpy as np
    # A tiny model and 40 epochs of 4 batches: the kill lands after the first checkpoint, well before the end.
    epochs = 40
    args = ['finetune', '--model', tiny_model, '--max-train', '64', '--max-test', '16', '--max-len', '32',
            '--batch-size', '16', '--epochs', str(epochs), '--no-progress', '--seed', '3', '--log-interval', '100']
    run_cli(*args, '--out', str(tmp_path / 'whole'))  # the run never stopped, in this process; the killed one
    # needs a process of its own

    killed = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, '-m', 'bert_tutorial', *args, '--out', str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(killed.glob('checkpoints/step-*/state.json')) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(killed.glob('checkpoints/step-*/state.json'))[-1]  # the newest (two are kept)
    state = json.loads(written.read_text())
    assert 1 <= state['epoch'] < epochs  # killed after an epoch's checkpoint, before the end
    assert not (killed / 'model.params').exists()
    run_cli(*args, '--out', str(killed), '--resume')

    whole, resumed = mx.nd.load(str(tmp_path / 'whole' / 'model.params')), mx.nd.load(str(killed / 'model.params'))
    assert whole.keys() == resumed.keys()
    for key in whole:  # bit for bit: the resumed run replays the same operations on the same float32 values
        np.testing.assert_array_equal(resumed[key].asnumpy(), whole[key].asnumpy())
    first = json.loads((tmp_path / 'whole' / 'metrics.json').read_text())['history']
    second = json.loads((killed / 'metrics.json').read_text())['history']
    assert [h['train_loss'] for h in second] == [h['train_loss'] for h in first]


@pytest.mark.parametrize('args, message', [
    (['finetune', '--lr', 'nan'], 'lr (--lr) must be a number from 1.2e-38 to 3.4e38, got nan'),
    (['finetune', '--lr', '-1'], 'lr (--lr) must be a number from 1.2e-38 to 3.4e38, got -1.0'),
    (['finetune', '--warmup-ratio', 'nan'], 'warmup_ratio (--warmup-ratio) must be 0 or in [1.2e-38, 1), got nan'),
    (['finetune', '--log-interval', '0'], 'log_interval (--log-interval) must be an integer >= 1, got 0'),
    (['finetune', '--checkpoint-every', '-1'], 'checkpoint_every (--checkpoint-every) must be an integer >= 1 or None'),
    (['finetune', '--dropout', '2'], 'dropout (--dropout) must be 0 or in [1.2e-38, 1), got 2.0'),
    (['finetune', '--bert-dropout', '-0.1'], 'bert_dropout (--bert-dropout) must be 0 or in [1.2e-38, 1), got -0.1'),
    (['finetune', '--max-train', '0'], 'max_train (--max-train) must be an integer >= 1 or None, got 0'),
    (['pretrain', '--heads', '0'], 'heads (--heads) must be an integer >= 1, got 0'),
    (['pretrain', '--layers', '0'], 'layers (--layers) must be an integer >= 1, got 0'),
    (['pretrain', '--units', '30', '--heads', '4'], 'units (--units) (30) must be divisible by heads (--heads) (4)'),
    (['pretrain', '--lr', 'inf'], 'lr (--lr) must be a number from 1.2e-38 to 3.4e38, got inf'),
])
def test_bad_settings_are_refused_before_any_work(args, message):
    """Each gets one ``error:`` line naming the flag and what it allows, exit code 2, no traceback, at once."""
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1 and proc.stdout == ''


def test_a_corpus_that_is_not_utf8_is_refused_or_read_with_its_encoding(tmp_path):
    from bert_tutorial.recipes.pretraining_data import read_text_corpus

    corpus = tmp_path / 'latin1.txt'
    corpus.write_bytes('Un café au lait. Une phrase.\n\nDeux. Trois.\n'.encode('latin-1'))
    proc = run_cli('pretrain', '--corpus', str(corpus), '--steps', '1', '--out', str(tmp_path / 'o'),
                   check=False)
    assert proc.returncode == 2
    assert f'error: corpus file {corpus} is not utf-8: invalid continuation byte at byte offset 6' in proc.stderr
    assert read_text_corpus(corpus, encoding='latin-1') == [['Un café au lait.', 'Une phrase.'], ['Deux.', 'Trois.']]


def test_an_unwritable_or_busy_out_fails_before_any_work(tmp_path, monkeypatch):
    """Found before the model loads (here, loading it would fail the test), and the holder is named."""
    from bert_tutorial import FinetuneConfig, PretrainConfig, finetune, pretrain
    from bert_tutorial.files import locked_output
    from bert_tutorial.recipes import finetuning, pretraining

    def no_work(*args, **kwargs):
        raise AssertionError('work started before the out folder was checked')

    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    monkeypatch.setattr(pretraining, 'load_corpus', no_work)
    (tmp_path / 'file').write_text('')
    with pytest.raises(ValueError, match='out: .*/file/run cannot be written: Not a directory'):
        finetune(FinetuneConfig(out=str(tmp_path / 'file' / 'run')))
    with locked_output(tmp_path / 'busy'):
        for run in (lambda: finetune(FinetuneConfig(out=str(tmp_path / 'busy'))),
                    lambda: pretrain(PretrainConfig(out=str(tmp_path / 'busy')))):
            with pytest.raises(ValueError, match=f'out: .*busy is in use by process {os.getpid()} on '):
                run()
        proc = run_cli('finetune', '--out', str(tmp_path / 'busy'), check=False)
        assert proc.returncode == 2 and f'is in use by process {os.getpid()}' in proc.stderr
    with locked_output(tmp_path / 'busy') as folder:  # released when the holder is done
        assert folder == tmp_path / 'busy'


@pytest.mark.slow
def test_resume_with_another_batch_size_is_refused_harmless_changes_are_not(tmp_path, tiny_model):
    args = ['finetune', '--model', tiny_model, '--max-train', '16', '--max-test', '8', '--max-len', '32', '--epochs',
            '1', '--batch-size', '4', '--out', str(tmp_path), '--no-progress']
    run_cli(*args)
    proc = run_cli(*args[:-4], '8', '--out', str(tmp_path), '--resume', check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('error: ')
    assert 'was written with batch_size=4, this run has batch_size=8' in proc.stderr
    assert run_cli(*args, '--resume', '--log-interval', '7').returncode == 0  # how it reports changes nothing


@pytest.mark.slow
def test_dropout_is_recorded_as_it_ran(tmp_path, tiny_model):
    """Where the C++ kernels are off, the default run records kernel_dropout=False (MXNet's Dropout ran): resuming
    it where the kernels are on (other masks) is refused, naming --accept-other-dropout-masks, unless the deprecated
    --mxnet-dropout asks for MXNet's again (0.5's flags still work, with a FutureWarning); whether the other operators
    run on the kernels (the deprecated --mxnet-ops: the same values) does not matter."""
    from bert_tutorial.speed.kernels import load_kernels
    if not load_kernels():
        pytest.skip('no C++ kernels here')
    args = ['finetune', '--model', tiny_model, '--max-train', '16', '--max-test', '8', '--max-len', '32', '--epochs',
            '1', '--batch-size', '8', '--out', str(tmp_path), '--no-progress']
    proc = cli(*args, '--keep-checkpoints', env={'BERT_TUTORIAL_KERNELS': 'off'})  # a process with the kernels off
    assert "bert_tutorial.speed.accelerate: speed: no C++ kernels here" in proc.stderr
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['config']['kernel_dropout'] is False and metrics['kernel_dropout'] is False
    # finished, nothing is left to run: whichever dropout a resume would draw, it says so
    proc = run_cli(*args, '--resume')
    assert 'this run had finished, nothing to resume' in proc.stdout
    (tmp_path / 'metrics.json').unlink()  # as a run killed after its last checkpoint leaves it
    proc = run_cli(*args, '--resume', check=False)  # this process: the kernels are on
    assert proc.returncode == 2 and proc.stderr.startswith('error: ')
    assert "was trained with MXNet's Dropout; this run would draw the dropout kernel's masks" in proc.stderr
    assert '--accept-other-dropout-masks' in proc.stderr
    proc = run_cli(*args, '--resume', '--mxnet-dropout', '--mxnet-ops')  # 0.5's flags: one warning line each
    assert proc.returncode == 0 and 'warning: --mxnet-dropout is deprecated' in proc.stderr
