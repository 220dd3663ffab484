import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from bert_tutorial.checkpoint import all_finite, latest_checkpoint, load_checkpoint, save_checkpoint
from bert_tutorial.loop import seed_everything


def _net_and_trainer():
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize(mx.init.Normal(1.0))
    trainer = gluon.Trainer(net.collect_params(), 'adam', {'learning_rate': 0.1})
    with autograd.record():
        loss = net(nd.ones((2, 4))).sum()
    loss.backward()
    trainer.step(2)
    return net, trainer


def test_round_trip_params_trainer_state_and_rng(tmp_path):
    net, trainer = _net_and_trainer()
    seed_everything(3)
    path = save_checkpoint(tmp_path, net, trainer, {'step': 7, 'epoch': 1, 'history': [{'loss': 0.5}]})
    expected_draw = np.random.rand()
    assert latest_checkpoint(tmp_path) == path

    net2 = gluon.nn.Dense(3, in_units=4)
    net2.initialize()
    trainer2 = gluon.Trainer(net2.collect_params(), 'adam', {'learning_rate': 0.1})
    state = load_checkpoint(path, net2, trainer2)
    assert state['step'] == 7 and state['history'] == [{'loss': 0.5}]
    np.testing.assert_array_equal(net.weight.data().asnumpy(), net2.weight.data().asnumpy())
    assert np.random.rand() == expected_draw
    assert trainer2._optimizer.num_update == trainer._optimizer.num_update


def test_keeps_the_newest_two_and_latest_is_the_newest_complete_one(tmp_path):
    net, trainer = _net_and_trainer()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, net, trainer, {'step': step})
    kept = sorted(p.name for p in (tmp_path / 'checkpoints').glob('step-*'))
    assert kept == ['step-00000002', 'step-00000003']
    assert json.loads((latest_checkpoint(tmp_path) / 'state.json').read_text())['step'] == 3


def test_refuses_nan_weights_and_keeps_last_good(tmp_path):
    net, trainer = _net_and_trainer()
    good = save_checkpoint(tmp_path, net, trainer, {'step': 1})
    net.weight.set_data(net.weight.data() * np.nan)
    assert not all_finite(net)
    with pytest.raises(FloatingPointError, match='NaN or inf'):
        save_checkpoint(tmp_path, net, trainer, {'step': 2})
    assert latest_checkpoint(tmp_path) == good


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    net, trainer = _net_and_trainer()
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match='not a checkpoint folder'):
        load_checkpoint(tmp_path / 'nope', net, trainer)


def test_older_checkpoint_resumes_weights_without_mispaired_optimizer_states(tmp_path, caplog):
    """Checkpoints from before optimizer states were ordered by structural names keep their weights only."""
    net, trainer = _net_and_trainer()
    path = save_checkpoint(tmp_path, net, trainer, {'step': 1})
    state_file = path / 'state.json'
    state = json.loads(state_file.read_text())
    assert state.pop('trainer_order') == 'structural-names'
    del state['state_sha256']  # neither had the checkpoints of that time
    state_file.write_text(json.dumps(state))
    net2 = gluon.nn.Dense(3, in_units=4)
    net2.initialize()
    trainer2 = gluon.Trainer(net2.collect_params(), 'adam', {'learning_rate': 0.1})
    with caplog.at_level('WARNING'):
        load_checkpoint(path, net2, trainer2)
    np.testing.assert_array_equal(net.weight.data().asnumpy(), net2.weight.data().asnumpy())
    assert trainer2.optimizer.num_update == 1 and 'optimizer states (Adam moments) start afresh' in caplog.text


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    from bert_tutorial.checkpoint import resume

    net, trainer = _net_and_trainer()
    good = save_checkpoint(tmp_path, net, trainer, {'step': 1, 'epoch': 0, 'history': []})
    expected = net.weight.data().asnumpy().copy()
    net.weight.set_data(net.weight.data() + 1)
    newest = save_checkpoint(tmp_path, net, trainer, {'step': 2, 'epoch': 0, 'history': []})
    for damage in (lambda: (newest / 'model.params').write_bytes((newest / 'model.params').read_bytes()[:50]),
                   lambda: (newest / 'state.json').write_text('{"step": 2, trunc')):
        damage()
        net2, trainer2 = _net_and_trainer()
        with caplog.at_level('WARNING'):
            state = resume(tmp_path, net2, trainer2)
        assert state['step'] == 1 and 'trying the checkpoint before it' in caplog.text
        np.testing.assert_array_equal(net2.weight.data().asnumpy(), expected)
    assert good.exists()


def test_temporary_folders_of_killed_runs_are_removed(tmp_path):
    net, trainer = _net_and_trainer()
    stale = tmp_path / 'checkpoints' / '.step-00000005.abc123'
    stale.mkdir(parents=True)
    (stale / 'model.params').write_bytes(b'x' * 1000)
    save_checkpoint(tmp_path, net, trainer, {'step': 6})
    assert not stale.exists()
    assert [p.name for p in (tmp_path / 'checkpoints').iterdir()] == ['step-00000006']


def test_resume_refuses_other_settings_and_warns_when_it_cannot_check(tmp_path, caplog):
    from bert_tutorial.checkpoint import check_run_dir, resume

    net, trainer = _net_and_trainer()
    settings = {'batch_size': 4, 'lr': 5e-5, 'pooling': 'mean', 'seed': 0, 'epochs': 3}
    path = save_checkpoint(tmp_path, net, trainer, {'step': 1, 'settings': settings})
    check_run_dir(tmp_path, True, dict(settings))  # the same: accepted
    for key, value in (('batch_size', 8), ('lr', 1e-4), ('pooling', 'cls'), ('seed', 1), ('epochs', 4)):
        with pytest.raises(ValueError, match=f'written with {key}={settings[key]!r}, this run has {key}={value!r}'):
            resume(tmp_path, *_net_and_trainer(), settings=dict(settings, **{key: value}))
    state = json.loads((path / 'state.json').read_text())
    del state['settings'], state['state_sha256']  # as written before checkpoints recorded them
    (path / 'state.json').write_text(json.dumps(state))
    with caplog.at_level('WARNING'):
        assert resume(tmp_path, *_net_and_trainer(), settings=settings)['step'] == 1
    assert 'cannot be checked' in caplog.text


def test_an_old_checkpoint_resumes_its_weights_and_the_schedule_with_fresh_optimizer_states(tmp_path, caplog):
    from bert_tutorial.checkpoint import resume

    net, trainer = _net_and_trainer()
    path = save_checkpoint(tmp_path, net, trainer, {'step': 7, 'epoch': 1, 'history': []})
    state = json.loads((path / 'state.json').read_text())
    for key in ('settings', 'sha256', 'state_sha256'):  # bert_tutorial 0.1 wrote none of them
        state.pop(key, None)
    (path / 'state.json').write_text(json.dumps(state))
    net2, trainer2 = _net_and_trainer()
    with caplog.at_level('WARNING'):
        assert resume(tmp_path, net2, trainer2, settings={'lr': 0.1})['step'] == 7
    assert 'cannot be checked' in caplog.text and 'start afresh' in caplog.text
    np.testing.assert_array_equal(net2.weight.data().asnumpy(), net.weight.data().asnumpy())
    assert trainer2.optimizer.num_update == 7  # the schedule goes on from the checkpoint's step


def test_a_folder_of_damaged_checkpoints_or_another_runs_checkpoints_is_refused(tmp_path):
    from bert_tutorial.checkpoint import check_fresh_start, resume

    net, trainer = _net_and_trainer()
    path = save_checkpoint(tmp_path, net, trainer, {'step': 3})
    with pytest.raises(ValueError, match='holds checkpoints of an earlier run .step-00000003.: pass resume'):
        check_fresh_start(tmp_path)
    (path / 'model.params').write_bytes(b'')
    with pytest.raises(ValueError, match='no checkpoint of .* is intact: resume is not possible'):
        resume(tmp_path, *_net_and_trainer())
