"""A finished run leaves the model alone (its checkpoints go unless kept); a stopped one keeps them and resumes;
``--resume`` on a finished run says so, trains nothing and changes nothing."""
import hashlib
import json

import pytest
from conftest import write_reviews

from bert_tutorial.cli import main
from bert_tutorial.recipes import finetuning, pretraining

MODEL_FILES = {'.lock', 'config.json', 'model.params', 'vocab.json', 'metrics.json'}


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def digests(folder):
    """sha256 and mtime of every file under ``folder``: what "nothing changed" means."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob('*')) if p.is_file() and p.name != '.lock'}


def no_work(*args, **kwargs):
    raise AssertionError('a finished run was loaded or trained again')


@pytest.fixture
def finetune_args(tiny_encoder_dir, tmp_path):
    train = write_reviews(tmp_path / 'train.csv', 40, seed=1)
    return ['finetune', '--model', tiny_encoder_dir, '--train', train, '--epochs', 2, '--batch-size', 8,
            '--max-len', 16, '--no-progress', '--log-interval', 100]


def test_a_finished_finetune_removes_its_checkpoints_and_resume_says_it_has_finished(finetune_args, tmp_path, capsys,
                                                                                      monkeypatch):
    out = tmp_path / 'run'
    code, stdout, stderr = run_cli(capsys, *finetune_args, '--out', out)
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} == MODEL_FILES  # checkpoints/ (with best.params: select best) gone
    before = digests(out)
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    code, stdout, stderr = run_cli(capsys, *finetune_args, '--out', out, '--resume')
    assert code == 0, stderr
    assert stdout.startswith('this run had finished, nothing to resume') and str(out) in stdout
    assert digests(out) == before
    # Another setting is not "the same run, finished": refused as for a checkpoint, naming it.
    code, stdout, stderr = run_cli(capsys, *finetune_args, '--out', out, '--resume', '--epochs', 3)
    assert code == 2 and 'was written with epochs=2, this run has epochs=3' in stderr
    # Starting afresh over it is refused (it would overwrite the model), as over checkpoints.
    code, stdout, stderr = run_cli(capsys, *finetune_args, '--out', out)
    assert code == 2 and f'{out} holds a finished run (metrics.json)' in stderr
    assert digests(out) == before


def test_keep_checkpoints_keeps_them_and_resume_still_changes_nothing(finetune_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'run'
    assert run_cli(capsys, *finetune_args, '--out', out, '--keep-checkpoints')[0] == 0
    kept = {p.name for p in (out / 'checkpoints').iterdir()}
    assert len([k for k in kept if k.startswith('step-')]) == 2 and list(out.glob('checkpoints/step-*/best.params'))
    assert json.loads((out / 'metrics.json').read_text())['config']['keep_checkpoints'] is True
    before = digests(out)
    monkeypatch.setattr(finetuning, 'get_pretrained_bert', no_work)
    code, stdout, _ = run_cli(capsys, *finetune_args, '--out', out, '--resume')
    assert code == 0 and stdout.startswith('this run had finished') and digests(out) == before


def test_a_stopped_run_keeps_its_checkpoints_and_its_resume_finishes_lean(finetune_args, tmp_path, capsys,
                                                                          monkeypatch):
    """Stopped after training, before saving (as a kill there would): checkpoints and best.params stay; the resume
    trains nothing more, saves the model of the best epoch and then removes them."""
    out = tmp_path / 'run'

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(finetuning, 'save_model', stopped)
        assert run_cli(capsys, *finetune_args, '--out', out)[0] == 130
    assert list(out.glob('checkpoints/step-*/best.params')) and list(out.glob('checkpoints/step-*/state.json'))
    assert not (out / 'metrics.json').exists()
    code, stdout, stderr = run_cli(capsys, *finetune_args, '--out', out, '--resume')
    assert code == 0 and not stdout.startswith('this run had finished'), stderr
    assert {p.name for p in out.iterdir()} == MODEL_FILES


def test_pretrain_is_as_lean_and_says_when_it_has_finished(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('\n\n'.join(f'The cat {i} sat on the mat. It was warm. The dog {i} did not mind. Rain fell.'
                                  for i in range(30)))
    args = ['pretrain', '--corpus', corpus, '--steps', 4, '--eval-every', 2, '--batch-size', 4, '--units', 16,
            '--hidden', 32, '--heads', 2, '--layers', 1, '--max-len', 16, '--min-freq', 1, '--no-progress']
    out, kept = tmp_path / 'pt', tmp_path / 'kept'
    assert run_cli(capsys, *args, '--out', out)[0] == 0
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    assert run_cli(capsys, *args, '--out', kept, '--keep-checkpoints')[0] == 0
    assert [p.name for p in sorted((kept / 'checkpoints').iterdir())] == ['step-00000002', 'step-00000004']
    before = digests(out)
    monkeypatch.setattr(pretraining, 'load_corpus', no_work)
    code, stdout, stderr = run_cli(capsys, *args, '--out', out, '--resume')
    assert code == 0 and stdout.startswith('this run had finished, nothing to resume'), stderr
    assert digests(out) == before
    code, _, stderr = run_cli(capsys, *args, '--out', out)
    assert code == 2 and 'holds a finished run' in stderr
