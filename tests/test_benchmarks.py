"""The benchmark scripts run (quick mode) and write their figures."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_finetune_quick(tmp_path):
    results = tmp_path / 'finetune.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_finetune.py'), '--quick',
                           '--results', str(results)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x the tutorial's" in proc.stdout and 'GFLOP/s' in proc.stdout
    figures = json.loads(results.read_text())
    for key in ('speedup_vs_tutorial', 'speedup_vs_pytorch', 'gflops', 'matmul_peak_gflops', 'samples_per_second'):
        assert key in figures
    assert figures['speedup_vs_tutorial'] > 0 and figures['matmul_peak_gflops'] > 0 and figures['gflops'] > 0
    assert figures['padding_fraction']['default'] < figures['padding_fraction']['tutorial']
    if figures['profile'] is not None:  # the per-operator profile, when the C++ kernels build here
        assert 'outside FullyConnected' in proc.stdout
        outside = figures['profile']['outside_fully_connected_ms']
        assert set(outside) == {'mxnet', 'v0.3', 'every', 'default'} and all(ms > 0 for ms in outside.values())
        assert figures['profile']['operators']['mxnet'].get('_backward_LayerNorm', 0) > 0
        every = figures['profile']['operators']['every']
        ours = {'layer_norm': 'bert_layer_norm', 'softmax': 'bert_softmax', 'gelu': 'bert_gelu',
                'attention': 'bert_selfatt_qk', 'adam': 'bert_adam_update', 'grad_norm': 'bert_sum_sq'}
        assert set(ours.values()) | {'bert_dropout'} <= set(every), sorted(every)
        # (MXNet's Dropout still runs on one element a layer: it tells bert_dropout whether training is on)
        assert not {'adam_update', 'multi_sum_sq', 'LayerNorm', '_backward_LayerNorm'} & set(every)
        # mxnet: what finetune --no-fast runs: MXNet's operators and GluonNLP's BERTAdam (adamw_update), no kernel
        mxnet = figures['profile']['operators']['mxnet']
        assert {'multi_sum_sq', 'LayerNorm', 'Dropout'} <= set(mxnet) and any('adamw_update' in op for op in mxnet)
        assert not [op for op in mxnet if op.startswith(('bert_', '_backward_bert_')) and mxnet[op] > 0]
        # the default runs the kernels this machine's choice picked (printed first), and no others
        default, chosen = figures['profile']['operators']['default'], figures['kernel_choice']['kernels']
        assert 'bert_dropout' in default and 'default pipeline runs C++ kernels for' in proc.stdout
        assert {op for op, name in ours.items() if name in default} == {op for op in ours if chosen[op]}
    if figures['speedup_vs_pytorch'] is None:  # torch and transformers are not dependencies
        assert 'PyTorch comparison skipped' in proc.stdout and figures['pytorch_skipped']
    else:
        assert figures['speedup_vs_pytorch'] > 0 and 'Hugging Face + PyTorch' in proc.stdout


@pytest.mark.slow
def test_bench_predict_quick(tmp_path):
    results = tmp_path / 'predict.json'
    script = str(ROOT / 'benchmarks' / 'bench_predict.py')
    proc = subprocess.run([sys.executable, script, '--model-dir', str(tmp_path / 'none')],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and 'python -m bert_tutorial finetune --out' in proc.stderr
    # 64 test sentences (every variant, 2 interleaved rounds) and 4 timed one by one: the figures, at half the work
    proc = subprocess.run([sys.executable, script, '--quick', '--test', '64', '--latency', '4', '--model-dir',
                           str(tmp_path / 'none'), '--results', str(results)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'int8 vs float32 predict_sentiments' in proc.stdout and 'bars:' in proc.stdout
    figures = json.loads(results.read_text())
    for key in ('int8_speedup', 'int8_accuracy_drop', 'int8_agreement', 'int8_dense_layers', 'variants', 'bars'):
        assert key in figures
    assert set(figures['variants']) == {'float32', 'float32-sorted', 'exported', 'fused', 'int8', 'int8-sorted'}
    assert figures['int8_speedup'] > 0 and 0 < figures['int8_dense_layers'] <= figures['dense_layers']
    v = figures['variants']
    # Same model, same sentences: the float32 graphs agree exactly, INT8 mostly.
    assert v['exported']['agreement_with_float32'] == v['fused']['agreement_with_float32'] == 1.0
    assert v['int8']['agreement_with_float32'] >= 0.9
    assert v['int8-sorted']['agreement_with_float32'] >= 0.9


@pytest.mark.parametrize('name', ['default', 'every-kernel', 'mxnet-ops', 'mxnet', 'matmul', 'v0.3'])
def test_the_benchmarks_build_their_pipelines_as_finetune_does(tiny_vocab, monkeypatch, name):
    """benchmarks/pipelines.py: build_classifier, then accelerate (as ``--fast`` on a CPU; not for mxnet: as
    ``--no-fast``), then make_trainer with what accelerate returns; the blocks and optimizer each variant names."""
    import gluonnlp as nlp
    import mxnet as mx
    from conftest import tiny_bert_config

    from bert_tutorial.recipes.encoders import build_encoder
    from bert_tutorial.speed import (
        FusedBERTAdam,
        KernelDense,
        KernelDropout,
        KernelGELU,
        KernelLayerNorm,
        KernelSelfAttentionCell,
        MatmulLayerNorm,
        load_kernels,
    )
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from pipelines import build_pipeline

    if name in ('every-kernel', 'v0.3') and not load_kernels():
        pytest.skip('no C++ kernels here')
    net, trainer, acceleration = build_pipeline(name, build_encoder(tiny_bert_config(len(tiny_vocab), dropout=0.1)),
                                                mx.cpu())
    kinds, todo = set(), [net]
    while todo:
        block = todo.pop()
        kinds.add(type(block))
        todo += block._children.values()
    ops = {KernelGELU, KernelSelfAttentionCell, KernelDense}
    if name == 'mxnet':
        assert acceleration is None and type(trainer.optimizer) is nlp.optimizer.BERTAdam
        assert not kinds & {KernelLayerNorm, KernelDropout, MatmulLayerNorm, *ops}
        return
    assert type(trainer.optimizer) is FusedBERTAdam and acceleration.on
    assert mx.gluon.nn.LayerNorm not in kinds  # a LayerNorm kernel or MatmulLayerNorm in every accelerated variant
    if name == 'every-kernel':
        assert {KernelLayerNorm, KernelDropout, KernelGELU, KernelSelfAttentionCell} <= kinds
        assert trainer.optimizer.kernels and trainer.optimizer.norm_kernel
    elif name == 'mxnet-ops':
        assert not kinds & ops
    elif name in ('matmul', 'v0.3'):
        assert not kinds & ops and not trainer.optimizer.kernels
        assert (KernelLayerNorm if name == 'v0.3' else MatmulLayerNorm) in kinds
    assert (KernelDropout in kinds) is (load_kernels() and name not in ('matmul', 'v0.3'))


@pytest.mark.slow
def test_bench_finetune_reads_the_metrics_finetune_writes(tmp_path, monkeypatch):
    """The accuracies of full runs come from the ``metrics.json`` that ``finetune`` writes (a tiny run here)."""
    from bert_tutorial import FinetuneConfig, finetune
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from bench_finetune import full_run_accuracies

    finetune(FinetuneConfig(max_train=32, max_test=16, epochs=2, out=str(tmp_path / 'runs' / 'finetune'),
                            progress=False))
    metrics = json.loads((tmp_path / 'runs' / 'finetune' / 'metrics.json').read_text())
    found = full_run_accuracies(tmp_path)
    assert list(found) == ['default']
    assert found['default'] == {'test_accuracy': metrics['test_accuracy'], 'epochs': 2,
                                'train_samples_per_second': metrics['train_samples_per_second'],
                                'run': 'runs/finetune'}

