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
    if figures['speedup_vs_pytorch'] is None:  # torch and transformers are not dependencies
        assert 'PyTorch comparison skipped' in proc.stdout and figures['pytorch_skipped']
    else:
        assert figures['speedup_vs_pytorch'] > 0 and 'Hugging Face + PyTorch' in proc.stdout
