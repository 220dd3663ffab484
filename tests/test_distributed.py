"""Data-parallel fine-tuning over MXNet's parameter server, on 127.0.0.1: a scheduler, a server, two workers."""
import json
import os
import socket
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from conftest import run_cli

CMD = [sys.executable, '-m', 'bert_tutorial', 'finetune', '--max-train', '64', '--max-test', '16', '--epochs', '1',
       '--kvstore', 'dist_sync', '--no-progress', '--log-interval', '1']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_cluster(out, args, timeout=120):
    """A scheduler, a server and two workers of ``finetune`` (``args`` added), all on 127.0.0.1."""
    env = dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(_free_port()), DMLC_NUM_SERVER='1',
               DMLC_NUM_WORKER='2', DMLC_NODE_HOST='127.0.0.1', DMLC_INTERFACE='lo', OMP_NUM_THREADS='1',
               BERT_TUTORIAL_DIST_TIMEOUT=str(timeout))
    nodes = [subprocess.Popen([sys.executable, '-c', 'import mxnet'], env=dict(env, DMLC_ROLE=role),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for role in ('scheduler', 'server')]
    workers = [subprocess.Popen(CMD + args + ['--out', str(out)], env=dict(env, DMLC_ROLE='worker'),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    return nodes, workers


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1])  # 0, the default, gives the two shards 9 and 10 batches; 1 gives equal ones
def test_dist_sync_workers_run_the_same_steps_and_end_with_identical_parameters(tmp_path, seed):
    nodes, workers = start_cluster(tmp_path, ['--seed', str(seed)])
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
    finally:
        stop(nodes + workers)
    folders = {0: tmp_path, 1: tmp_path / 'worker-1'}  # worker 0 writes into --out, the others beside it
    ranks = sorted(int(o.split('worker ')[1].split(' of 2')[0]) for o in outputs if 'worker ' in o)
    assert ranks == [0, 1]
    metrics = {r: json.loads((folders[r] / 'metrics.json').read_text()) for r in folders}
    assert [metrics[r]['num_train'] for r in (0, 1)] == [32, 32]  # each worker its own half of the 64 examples
    steps = [sum(line.startswith('Batch ') for line in o.splitlines()) for o in outputs]
    assert steps[0] == steps[1] > 0  # the same number of steps on both workers
    if seed == 0:
        assert any('drops its last 1' in o for o in outputs), outputs
    a, b = (mx.nd.load(str(folders[r] / 'model.params')) for r in (0, 1))
    assert a.keys() == b.keys()
    mismatched = [k for k in a if not np.array_equal(a[k].asnumpy(), b[k].asnumpy())]
    assert not mismatched, f'parameters that differ between the workers: {mismatched}'


@pytest.mark.slow
def test_a_worker_that_dies_ends_the_others_with_a_message(tmp_path):
    nodes, workers = start_cluster(tmp_path, ['--max-train', '512', '--epochs', '3'], timeout=15)
    try:
        seen = ''
        deadline = time.time() + 300
        while 'Batch 1 ' not in seen and time.time() < deadline:  # both are training
            seen += workers[1].stdout.readline()
        assert 'Batch 1 ' in seen, seen
        workers[1].kill()
        start = time.time()
        out = workers[0].communicate(timeout=120)[0]
        assert time.time() - start < 60
        assert workers[0].returncode == 3
        assert 'waited 15 s for the gradients of the other workers without an answer' in out
    finally:
        stop(nodes + workers)


def test_dist_sync_without_a_cluster_is_a_clear_error(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith('DMLC_')]:
        monkeypatch.delenv(name)
    proc = run_cli(*CMD[3:], '--out', str(tmp_path), check=False)  # in this process: refused before any work
    assert proc.returncode == 2 and proc.stderr.startswith('error: ')
    assert "error: kvstore dist_sync needs a parameter-server cluster: start the workers with MXNet's launcher" in \
        proc.stderr
