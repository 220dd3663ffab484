"""Data-parallel fine-tuning over MXNet's parameter server, on 127.0.0.1: a scheduler, a server, two workers."""
import json
import os
import re
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


def cluster_env(workers: int, timeout: float) -> dict:
    """The environment of a cluster on 127.0.0.1: one OpenMP thread a process (two workers share 2 cores), and this
    process's kernel choice given to the workers (BERT_TUTORIAL_KERNEL_CHOICE names every operator): with another
    thread count they would otherwise measure it again, and write it over the one cached for the user's machine."""
    from bert_tutorial.speed.choice import kernel_choice
    choice = ','.join(f'{op}={"on" if on else "off"}' for op, on in kernel_choice().items())
    return dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(_free_port()), DMLC_NUM_SERVER='1',
                DMLC_NUM_WORKER=str(workers), DMLC_NODE_HOST='127.0.0.1', DMLC_INTERFACE='lo', OMP_NUM_THREADS='1',
                BERT_TUTORIAL_DIST_TIMEOUT=str(timeout), BERT_TUTORIAL_KERNEL_CHOICE=choice)


def start_cluster(out, args, timeout=120):
    """A scheduler, a server and two workers of ``finetune`` (``args`` added), all on 127.0.0.1."""
    env = cluster_env(2, timeout)
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


def read_until(process, text: str, seconds: float = 300) -> str:
    """What ``process`` printed up to the line that holds ``text`` (which must come within ``seconds``)."""
    seen = ''
    deadline = time.time() + seconds
    while text not in seen and time.time() < deadline:
        seen += process.stdout.readline()
    assert text in seen, seen
    return seen


@pytest.mark.slow
def test_a_worker_that_dies_ends_the_others_with_a_message(tmp_path):
    nodes, workers = start_cluster(tmp_path, ['--max-train', '512', '--epochs', '3'], timeout=15)
    try:
        read_until(workers[1], 'Batch 1 ')  # both are training
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


# ---- a tiny cluster: a 1-layer, 16-unit encoder and 64 toy reviews, a few seconds a run ---------------------------

@pytest.fixture
def tiny_run(tmp_path, tiny_bert, tiny_vocab):
    """The arguments of a tiny fine-tuning run (its encoder and training file written into ``tmp_path``)."""
    from conftest import toy_reviews

    from bert_tutorial import save_model
    encoder = save_model(tmp_path / 'encoder', tiny_bert, tiny_vocab, {'model_type': 'encoder',
                                                                       'encoder': tiny_bert.config})
    train = tmp_path / 'train.csv'
    train.write_text('text,label\n' + ''.join(f'{t},{y}\n' for t, y in toy_reviews(64)))
    test = tmp_path / 'test.csv'
    test.write_text('text,label\n' + ''.join(f'{t},{y}\n' for t, y in toy_reviews(16, seed=1)))
    return ['--model', str(encoder), '--train', str(train), '--test', str(test), '--validation-fraction', '0',
            '--select', 'last', '--batch-size', '8', '--no-hybridize']


def start_tiny_cluster(out, worker_args, timeout):
    """A scheduler, a server and one worker of ``finetune`` a list in ``worker_args`` (its arguments), on 127.0.0.1;
    ``BERT_TUTORIAL_DIST_TIMEOUT`` is ``timeout``."""
    env = cluster_env(len(worker_args), timeout)
    nodes = [subprocess.Popen([sys.executable, '-c', 'import mxnet'], env=dict(env, DMLC_ROLE=role),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for role in ('scheduler', 'server')]
    workers = [subprocess.Popen(CMD + args + ['--out', str(out)], env=dict(env, DMLC_ROLE='worker'),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for args in worker_args]
    return nodes, workers


@pytest.mark.slow
def test_tiny_dist_sync_run_ends_on_every_worker_with_the_same_parameters(tmp_path, tiny_run):
    """The healthy case of the two below: exit 0 everywhere (the barrier at the end passes), equal parameters."""
    nodes, workers = start_tiny_cluster(tmp_path / 'out', [tiny_run, tiny_run], timeout=20)
    try:
        outputs = [w.communicate(timeout=300)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        assert [n.wait(timeout=60) for n in nodes] == [0, 0]  # the scheduler and the server end too
    finally:
        stop(nodes + workers)
    a, b = (mx.nd.load(str(f / 'model.params')) for f in (tmp_path / 'out', tmp_path / 'out' / 'worker-1'))
    assert a.keys() == b.keys()
    mismatched = {k: float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a
                  if not np.array_equal(a[k].asnumpy(), b[k].asnumpy())}
    assert not mismatched, (mismatched, outputs)


@pytest.mark.slow
def test_workers_started_with_different_settings_are_refused_on_every_worker(tmp_path, tiny_run):
    """Worker 1 has another learning rate and seed: both end at the start with one line naming them (before, both
    trained and ended with different parameters and exit code 0)."""
    nodes, workers = start_tiny_cluster(tmp_path / 'out', [tiny_run, tiny_run + ['--lr', '1e-3', '--seed', '3']],
                                        timeout=20)
    try:
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        stop(nodes + workers)
    assert [w.returncode for w in workers] == [2, 2], outputs
    ranks = []
    for out, mine in zip(outputs, ['lr=5e-05, seed=0', 'lr=0.001, seed=3']):  # the scheduler assigns the ranks
        found = re.search(r'error: the workers were started with different settings: lr, seed differ between them '
                          rf'\(this worker, rank (\d), has {mine}\); start every worker with the same ones', out)
        assert found, out
        ranks.append(int(found[1]))
        assert 'Batch ' not in out and 'Traceback' not in out
    assert sorted(ranks) == [0, 1]
    assert not (tmp_path / 'out' / 'model.params').exists()


@pytest.mark.slow
def test_workers_end_with_a_message_when_the_scheduler_dies(tmp_path, tiny_run):
    """The scheduler killed mid-run: the steps (worker <-> server) go on, but the end of the run passes through it;
    each worker ends with exit code 3 and the watchdog's line instead of blocking for ever after its summary."""
    nodes, workers = start_tiny_cluster(tmp_path / 'out', [tiny_run + ['--epochs', '2']] * 2, timeout=5)
    try:
        read_until(workers[0], 'Batch 0 ')  # training has started
        nodes[0].kill()
        start = time.time()
        outputs = [w.communicate(timeout=60)[0] for w in workers]
        assert time.time() - start < 45
        assert [w.returncode for w in workers] == [3, 3], outputs
        for out in outputs:
            assert 'waited 5 s for the other workers and the scheduler at the end of the run without an answer' in out
    finally:
        stop(nodes + workers)
