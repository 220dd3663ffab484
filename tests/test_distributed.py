"""Data-parallel fine-tuning over MXNet's parameter server, on 127.0.0.1: a scheduler, a server, two workers."""
import json
import os
import socket
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_sync_workers_end_with_identical_parameters(tmp_path):
    env = dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(_free_port()), DMLC_NUM_SERVER='1',
               DMLC_NUM_WORKER='2', DMLC_NODE_HOST='127.0.0.1', DMLC_INTERFACE='lo', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'bert_tutorial', 'finetune', '--max-train', '64', '--max-test', '16',
           '--epochs', '1', '--kvstore', 'dist_sync', '--no-progress', '--seed', '1']
    procs = [subprocess.Popen([sys.executable, '-c', 'import mxnet'], env=dict(env, DMLC_ROLE=role),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role in ('scheduler', 'server')]
    workers = [subprocess.Popen(cmd + ['--out', str(tmp_path / f'w{i}')], env=dict(env, DMLC_ROLE='worker'),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs + workers:
            if p.poll() is None:
                p.kill()
    assert sum('worker 0 of 2' in o or 'worker 1 of 2' in o for o in outputs) == 2
    metrics = [json.loads((tmp_path / f'w{i}' / 'metrics.json').read_text()) for i in range(2)]
    assert [m['num_train'] for m in metrics] == [32, 32]  # each worker its own half of the 64 examples
    assert metrics[0]['history'][0]['train_loss'] != metrics[1]['history'][0]['train_loss']  # different shards
    a, b = (mx.nd.load(str(tmp_path / f'w{i}' / 'model.params')) for i in range(2))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy())
