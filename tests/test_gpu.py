"""Without a GPU: ``--ctx gpu`` says what to install on every command that takes it, tools/gpu_check.py says there
is none and exits 0. (That a model on a GPU never builds the C++ kernels, CPU operators: tests/test_accelerate.py.)"""
import importlib.util
from pathlib import Path

import mxnet as mx
import pytest

from bert_tutorial.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(mx.context.num_gpus() > 0, reason='a GPU is visible: these check the machines without')


@pytest.mark.parametrize('command', [
    ['finetune', '--out', '{out}'],
    ['pretrain', '--out', '{out}'],
    ['predict', '--model-dir', '{out}', 'a fine film'],
    ['evaluate', '--model-dir', '{out}', '--data', 'movie-reviews'],
])
def test_ctx_gpu_without_a_gpu_says_what_to_install(command, tmp_path, capsys):
    out = tmp_path / 'out'
    code = main([a.format(out=out) for a in command] + ['--ctx', 'gpu'])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == '' and 'Traceback' not in stderr
    assert stderr.startswith('error: ctx gpu (--ctx gpu): no GPU is visible to MXNet: ')
    if not mx.runtime.Features().is_enabled('CUDA'):  # pip's mxnet wheel, as pinned
        assert 'built without CUDA' in stderr and 'pip install mxnet-cu117==1.9.1' in stderr
    assert 'docs/install.md, "On a GPU"' in stderr and '--ctx cpu' in stderr
    assert not out.exists()  # refused before anything is written


def test_gpu_check_says_there_is_no_gpu_and_exits_0(capsys):
    spec = importlib.util.spec_from_file_location('gpu_check', ROOT / 'tools' / 'gpu_check.py')
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main([]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith('no GPU: ') and 'Nothing to compare' in stdout


def test_a_cuda_build_without_a_working_driver_is_one_line(monkeypatch):
    """A CUDA build of MXNet whose driver is missing raises from num_gpus: the default is the CPU, and --ctx gpu
    names MXNet's first line instead of its C++ trace."""
    from bert_tutorial.devices import contexts, default_ctx

    def broken():
        raise mx.base.MXNetError('[12:00:00] src/c_api.cc:1: CUDA: CUDA driver version is insufficient\nStack trace:'
                                 '\n  [bt] (0) libmxnet.so')
    monkeypatch.setattr(mx.context, 'num_gpus', broken)
    assert default_ctx() == 'cpu'
    with pytest.raises(ValueError) as err:
        contexts('gpu')
    assert str(err.value).startswith('ctx gpu (--ctx gpu): MXNet cannot query the GPUs: [12:00:00] src/c_api.cc:1: '
                                     'CUDA: CUDA driver version is insufficient (see docs/install.md')
    assert 'Stack trace' not in str(err.value)
