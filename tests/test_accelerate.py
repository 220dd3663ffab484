"""The speed plug-in's one switch (issue 24): ``speed.accelerate(net)`` and ``finetune --fast/--no-fast``.

On a CPU it swaps in the kernels this machine's choice picks (``$BERT_TUTORIAL_KERNEL_CHOICE`` overrides) and hands
``make_trainer`` ``FusedBERTAdam``; anywhere else it does nothing, builds nothing, and says so; ``--no-fast`` runs
MXNet's operators and GluonNLP's ``BERTAdam``. A resume where the other dropout would run is refused, naming the
flag that accepts it.
"""
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import pytest
from conftest import run_cli, tiny_bert_config

from bert_tutorial.loop import make_trainer
from bert_tutorial.speed import (
    FusedBERTAdam,
    KernelDense,
    KernelDropout,
    KernelGELU,
    KernelLayerNorm,
    KernelSelfAttentionCell,
    MatmulLayerNorm,
    accelerate,
    dense_available,
    load_kernels,
    use_chosen_kernels,
    use_kernels,
)
from bert_tutorial.tutorial import BERTClassifier

ROOT = Path(__file__).resolve().parents[1]
SPEED_BLOCKS = (MatmulLayerNorm, KernelLayerNorm, KernelDropout, KernelGELU, KernelSelfAttentionCell, KernelDense)
LOGGER = 'bert_tutorial.speed.accelerate'


def _classifier(tiny_vocab):
    """A 1-layer GluonNLP BERT classifier with dropout everywhere (the embedding's, attention's, the layer's, the
    head's), initialized: what ``accelerate`` is called on."""
    from bert_tutorial.recipes.encoders import build_encoder
    net = BERTClassifier(build_encoder(tiny_bert_config(len(tiny_vocab), dropout=0.1)), 2, dropout=0.1)
    net.initialize()
    return net


def _blocks(block):
    for child in block._children.values():
        yield child
        yield from _blocks(child)


def _kinds(net) -> Counter:
    return Counter(type(b) for b in _blocks(net))


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def no_build(monkeypatch):
    """``load_kernels`` fails wherever the plug-in reads it: a test passes only if nothing asks for the kernels."""
    from bert_tutorial.speed import choice, kernel_ops, kernels, optimizer
    accelerate_module = sys.modules['bert_tutorial.speed.accelerate']  # the package's attribute is the function

    def fail():
        raise AssertionError('load_kernels called: the C++ library would be built and loaded')
    for module in (kernels, accelerate_module, choice, kernel_ops, optimizer):
        monkeypatch.setattr(module, 'load_kernels', fail)


# ---- off a CPU: nothing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ctx', [mx.gpu(0), [mx.cpu(), mx.gpu(0)]], ids=['gpu', 'cpu and gpu'])
def test_accelerate_off_a_cpu_changes_nothing_and_says_so(tiny_vocab, no_build, caplog, ctx):
    """``accelerate(net, ctx=mx.gpu(0))`` returns before touching anything (no GPU needed): no block swapped (no
    ``MatmulLayerNorm``, no kernel block), no library built or loaded, GluonNLP's ``BERTAdam``, one log line."""
    net = _classifier(tiny_vocab)
    before = _kinds(net)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        acceleration = accelerate(net, ctx)
    assert _kinds(net) == before and not any(issubclass(kind, SPEED_BLOCKS) for kind in before)
    assert acceleration.optimizer == 'bertadam' and not acceleration.on and not acceleration.dropout
    assert acceleration.swapped == {} and acceleration.choice is None
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].startswith('speed: nothing to do on ') and 'gpu(0)' in lines[0]
    assert "MXNet's operators and GluonNLP's BERTAdam" in lines[0]
    assert type(make_trainer(net, 1e-3, acceleration.optimizer).optimizer) is nlp.optimizer.BERTAdam


def test_a_model_on_a_gpu_is_left_alone_by_every_entry_point(tiny_vocab, no_build, monkeypatch, caplog):
    """Parameters on a GPU (their ``list_ctx`` says so, as on a GPU machine): ``accelerate(net)`` (its context from
    the parameters), ``use_chosen_kernels`` and ``use_kernels`` swap nothing and never build the kernels (they are
    CPU operators; ``MatmulLayerNorm`` is a CPU work-around)."""
    net = _classifier(tiny_vocab)
    for p in net.collect_params().values():
        monkeypatch.setattr(p, 'list_ctx', lambda: [mx.gpu(0)])
    before = _kinds(net)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert accelerate(net).optimizer == 'bertadam'
    assert len(_lines(caplog)) == 1 and 'gpu(0)' in _lines(caplog)[0]
    nothing = dict.fromkeys(('layer_norm', 'dropout', 'softmax', 'gelu', 'attention', 'dense'), 0)
    assert use_chosen_kernels(net) == dict(nothing, kernels=False, choice=None)
    assert use_kernels(net, softmax=True, gelu=True, attention=True, dense=True) == dict(nothing, kernels=False)
    assert _kinds(net) == before


class _Made(Exception):
    """Stops a loop once its trainer is made."""


@pytest.mark.parametrize('ctx', [mx.gpu(0), mx.cpu()], ids=['gpu', 'cpu'])
def test_pretrain_loop_takes_the_optimizer_accelerate_gives(monkeypatch, caplog, request, ctx):
    """``pretrain_loop`` called as a library (no ``optimizer``): on a GPU GluonNLP's ``BERTAdam``, nothing built
    (the speed plug-in's ``FusedBERTAdam`` would build and time the kernels for nothing); on a CPU ``FusedBERTAdam``.
    No block of the model is swapped either way."""
    from bert_tutorial.recipes import pretraining

    def made(model, lr, optimizer, *args, **kwargs):
        raise _Made(optimizer)
    monkeypatch.setattr(pretraining, 'make_trainer', made)
    if ctx.device_type == 'gpu':
        request.getfixturevalue('no_build')
    model = pretraining.BERTPretrainModel(20, 16, 32, 2, 1, 0.1, max_len=16)
    model.initialize()
    before = _kinds(model)
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(_Made) as made_with:
        pretraining.pretrain_loop(model, [None], [None], 1, 1e-3, ctx)
    assert made_with.value.args[0] == ('bertadam' if ctx.device_type == 'gpu' else FusedBERTAdam)
    assert _kinds(model) == before and len(_lines(caplog)) == 1


# ---- on a CPU: what the choice says ------------------------------------------------------------------------------

def test_accelerate_on_a_cpu_without_operator_kernels(tiny_vocab, monkeypatch, caplog):
    """``BERT_TUTORIAL_KERNEL_CHOICE=none``: no operator kernel; LayerNorm on ``MatmulLayerNorm``, the dropout kernel
    where the kernels load (dropout is never chosen by measurement), ``FusedBERTAdam`` on MXNet's ``adam_update``;
    one log line. (Where the kernels are off, the same but MXNet's Dropout.)"""
    monkeypatch.setenv('BERT_TUTORIAL_KERNEL_CHOICE', 'none')
    net = _classifier(tiny_vocab)
    before = _kinds(net)
    norms, drops = before[mx.gluon.nn.LayerNorm], before[mx.gluon.nn.Dropout]
    assert norms == 3 and drops >= 4
    on = load_kernels()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        acceleration = accelerate(net)
    after = _kinds(net)
    assert after[MatmulLayerNorm] == norms and after[mx.gluon.nn.LayerNorm] == 0
    assert after[KernelDropout] == (drops if on else 0)
    assert not any(after[k] for k in (KernelLayerNorm, KernelGELU, KernelSelfAttentionCell, KernelDense))
    assert acceleration.on and acceleration.dropout is on and acceleration.optimizer is FusedBERTAdam
    assert acceleration.swapped == {'layer_norm': norms, 'dropout': drops if on else 0, 'softmax': 0, 'gelu': 0,
                                    'attention': 0, 'dense': 0}
    assert not any(acceleration.choice['kernels'].values())
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0] == acceleration.message
    assert ("MXNet's operators for layer_norm (as MatmulLayerNorm), softmax" in lines[0]
            and "the C++ kernel's masks" in lines[0]) if on \
        else lines[0].startswith('speed: no C++ kernels here')
    optimizer = make_trainer(net, 1e-3, acceleration.optimizer).optimizer
    assert type(optimizer) is FusedBERTAdam and not optimizer.kernels and not optimizer.norm_kernel


@pytest.mark.parametrize('switches', [{}, {'dropout': False}, {'layer_norm': False, 'ops': False}],
                         ids=['all', 'mxnet-dropout', 'only-dropout'])
def test_accelerate_on_a_cpu_with_every_kernel(kernels_loaded, tiny_vocab, monkeypatch, caplog, switches):
    """``BERT_TUTORIAL_KERNEL_CHOICE=all``: every kernel block, and ``FusedBERTAdam`` on its kernels; ``dropout``,
    ``layer_norm`` and ``ops`` (what 0.5's flags became) keep MXNet's blocks of their kind."""
    monkeypatch.setenv('BERT_TUTORIAL_KERNEL_CHOICE', 'all')
    net = _classifier(tiny_vocab)
    before = _kinds(net)
    dense = sum(type(b) is mx.gluon.nn.Dense and not b._flatten and b.bias is not None for b in _blocks(net))
    assert dense >= 2  # the feed-forward pair at least
    with caplog.at_level(logging.INFO, logger=LOGGER):
        acceleration = accelerate(net, mx.cpu(), **switches)
    after = _kinds(net)
    dropout, norm, ops = (switches.get(k, True) for k in ('dropout', 'layer_norm', 'ops'))
    assert after[KernelDropout] == (before[mx.gluon.nn.Dropout] if dropout else 0) == acceleration.swapped['dropout']
    assert after[KernelLayerNorm] == (3 if norm else 0) == acceleration.swapped['layer_norm']
    assert after[MatmulLayerNorm] == 0 and after[mx.gluon.nn.LayerNorm] == (0 if norm else 3)
    assert after[KernelSelfAttentionCell] == (1 if ops else 0) == acceleration.swapped['attention']
    assert after[KernelGELU] == (1 if ops else 0) == acceleration.swapped['gelu']
    on_blas = ops and dense_available()
    assert after[KernelDense] == (dense if on_blas else 0)
    # an attention cell counts under dense too: its query/key/value projection runs on bert_fc
    assert acceleration.swapped['dense'] == (dense + after[KernelSelfAttentionCell] if on_blas else 0)
    assert acceleration.dropout is dropout and acceleration.optimizer is FusedBERTAdam
    assert all(acceleration.choice['kernels'][op] for op in ('layer_norm', 'softmax', 'gelu', 'attention', 'adam'))
    assert 'BERT_TUTORIAL_KERNEL_CHOICE=all' in acceleration.choice['decided_by']
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].endswith("dropout: the C++ kernel's masks" if dropout else
                                                 "dropout: MXNet's masks")
    optimizer = make_trainer(net, 1e-3, acceleration.optimizer).optimizer
    assert optimizer.kernels and optimizer.norm_kernel
    net.hybridize(static_alloc=True)
    assert net(mx.nd.array([[2, 5, 3]]), mx.nd.zeros((1, 3)), mx.nd.array([3])).shape == (1, 2)


# ---- finetune: --fast by default, --no-fast is MXNet's ------------------------------------------------------------

def test_fast_is_the_default():
    from bert_tutorial.cli import build_parser
    from bert_tutorial.recipes.finetuning import FinetuneConfig

    assert FinetuneConfig().fast is True and FinetuneConfig().accept_other_dropout_masks is False
    parser = build_parser()
    assert parser.parse_args(['finetune']).fast is True
    assert parser.parse_args(['finetune', '--no-fast']).fast is False
    assert parser.parse_args(['finetune', '--accept-other-dropout-masks']).accept_other_dropout_masks is True


# A new process (MXNet cannot unload a library): a tiny --no-fast finetune, then (where the kernels build) the default.
FINETUNES = """
import json, sys
import mxnet as mx
from bert_tutorial import cli
from bert_tutorial.tutorial import train

trainers = []
make_trainer = train.make_trainer
train.make_trainer = lambda *a, **k: trainers.append(make_trainer(*a, **k)) or trainers[-1]
args = json.loads(sys.argv[1])

def library_mapped():
    with open('/proc/self/maps') as maps:
        return 'libbert_kernels' in maps.read()

def run(*flags):
    assert cli.main(args + list(flags)) == 0
    return {'optimizer': type(trainers[-1].optimizer).__name__, 'library': library_mapped(),
            'ops': sorted(n for n in dir(mx.nd) if n.startswith('bert_'))}

report = {'no-fast': run('--no-fast', '--out', sys.argv[2] + '/slow')}
from bert_tutorial.speed import kernels
if kernels.kernels_enabled() and kernels._compiler():  # the control: the default brings the kernels in
    report['fast'] = run('--out', sys.argv[2] + '/fast')
print(json.dumps(report))
"""


@pytest.mark.skipif(not Path('/proc/self/maps').exists(), reason='reads the shared objects from /proc/self/maps')
def test_no_fast_finetune_runs_mxnets_operators_and_bert_adam(tiny_model, tmp_path):
    """``finetune --no-fast``, in a new process: GluonNLP's ``BERTAdam``, no C++ library loaded, no library operator
    in ``mx.nd``, its log says so; then (where the kernels build) the default run in the same process has them."""
    args = ['finetune', '--model', tiny_model, '--max-train', '16', '--max-test', '8', '--max-len', '32', '--epochs',
            '1', '--batch-size', '8', '--no-progress', '--validation-fraction', '0', '--select', 'last']
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, '-c', FINETUNES, json.dumps(args), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['no-fast'] == {'optimizer': 'BERTAdam', 'library': False, 'ops': []}
    assert "speed: off (fast=False, --no-fast): MXNet's operators and GluonNLP's BERTAdam" in done.stderr
    metrics = json.loads((tmp_path / 'slow' / 'metrics.json').read_text())
    assert metrics['kernel_dropout'] is False and metrics['kernel_choice'] is None and not metrics['config']['fast']
    if 'fast' in report:
        fast = report['fast']
        assert fast['optimizer'] == 'FusedBERTAdam' and fast['library'] and 'bert_dropout' in fast['ops']
        assert json.loads((tmp_path / 'fast' / 'metrics.json').read_text())['kernel_dropout'] is True


# ---- resume across dropout kinds ---------------------------------------------------------------------------------

def test_resume_where_the_other_dropout_would_run(kernels_loaded, tiny_model, tmp_path, monkeypatch, caplog):
    """A run checkpointed with the dropout kernel (``--fast`` on a CPU) resumed with ``--no-fast`` (MXNet's
    Dropout): refused, naming ``--accept-other-dropout-masks``; with it, it continues and logs it. Its next
    checkpoint records MXNet's Dropout: a ``--fast`` resume is refused in turn, and a resume with the same dropout
    (``--no-fast``) finishes the run."""
    from test_verified_files import Killed, kill_after_step

    from bert_tutorial.tutorial import train

    # 3 epochs of 2 batches, a checkpoint after each: killed after the first epoch, then after the second
    args = ['finetune', '--model', tiny_model, '--max-train', '16', '--max-test', '8', '--max-len', '32', '--epochs',
            '3', '--batch-size', '8', '--no-bucket', '--out', str(tmp_path), '--no-progress',
            '--validation-fraction', '0', '--select', 'last']

    def killed(step, *flags):
        with monkeypatch.context() as patch:
            kill_after_step(patch, train, step)
            with pytest.raises(Killed):
                run_cli(*args, *flags)

    def settings():
        return json.loads(sorted(tmp_path.glob('checkpoints/step-*/state.json'))[-1].read_text())['settings']

    killed(2)
    assert settings()['kernel_dropout'] is True
    proc = run_cli(*args, '--resume', '--no-fast', check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('error: resume: the checkpoint in ')
    assert "was trained with the dropout kernel's masks; this run would draw MXNet's Dropout" in proc.stderr
    assert 'accept_other_dropout_masks (--accept-other-dropout-masks)' in proc.stderr
    with caplog.at_level(logging.WARNING):
        killed(4, '--resume', '--no-fast', '--accept-other-dropout-masks')
    assert any("the checkpoint was trained with the dropout kernel's masks; continuing with MXNet's Dropout from "
               'here on' in r.getMessage() for r in caplog.records)
    assert settings()['kernel_dropout'] is False
    proc = run_cli(*args, '--resume', check=False)
    assert proc.returncode == 2 and "was trained with MXNet's Dropout; this run would draw the dropout kernel's " \
        'masks' in proc.stderr and '--accept-other-dropout-masks' in proc.stderr
    assert run_cli(*args, '--resume', '--no-fast').returncode == 0  # the same dropout: no question asked
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert len(metrics['history']) == 3 and metrics['kernel_dropout'] is False
    # finished: nothing is left to run, so the dropout a resume would draw does not matter (nor do kernels build)
    proc = run_cli(*args, '--resume', check=False)
    assert proc.returncode == 0 and 'this run had finished, nothing to resume' in proc.stdout, proc.stderr


@pytest.mark.parametrize('first, then', [('fused', 'bertadam'), ('bertadam', 'fused')])
def test_a_resumed_run_steps_on_the_optimizer_it_was_given(tiny_vocab, tmp_path, first, then):
    """Gluon's ``load_states`` puts the pickled optimizer of the checkpoint's run in place of the trainer's: a
    ``--fast`` checkpoint resumed with ``--no-fast`` stepped on ``FusedBERTAdam`` (and on a GPU would build the
    kernels). The trainer keeps its own optimizer and takes the checkpoint's moments and update counts."""
    from gluonnlp.optimizer import BERTAdam

    from bert_tutorial.checkpoint import load_checkpoint, save_checkpoint
    kinds = {'fused': FusedBERTAdam, 'bertadam': 'bertadam'}
    net = _classifier(tiny_vocab)
    trainer = make_trainer(net, 1e-3, kinds[first])
    ids, segments, valid_len = mx.nd.array([[2, 5, 6, 3]]), mx.nd.zeros((1, 4)), mx.nd.array([4])
    for _ in range(2):
        with mx.autograd.record():
            loss = net(ids, segments, valid_len).sum()
        loss.backward()
        trainer.step(1)
    save_checkpoint(tmp_path, net, trainer, {'step': 2, 'epoch': 0, 'history': [], 'seed': 0})
    resumed = make_trainer(net, 1e-3, kinds[then])
    own = resumed.optimizer
    load_checkpoint(sorted(tmp_path.glob('checkpoints/step-*'))[-1], net, resumed)
    expected = FusedBERTAdam if then == 'fused' else BERTAdam
    assert resumed.optimizer is own and type(own) is expected
    assert all(updater.optimizer is own for updater in resumed._updaters)
    assert own.num_update == trainer.optimizer.num_update == 2
    assert own._index_update_count == trainer.optimizer._index_update_count
    saved, loaded = trainer._updaters[0].states, resumed._updaters[0].states
    assert saved.keys() == loaded.keys() and all(  # Adam's moments, as written
        (a.asnumpy() == b.asnumpy()).all() for k in saved for a, b in zip(saved[k], loaded[k]))
