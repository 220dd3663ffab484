"""Atomic training checkpoints (parameters, optimizer state, progress, RNG state).

A checkpoint is a folder ``<run_dir>/checkpoints/step-XXXXXXXX/`` holding ``model.params``,
``trainer.states`` and ``state.json``. It is written under a temporary name and renamed into place, and
``<run_dir>/checkpoints/latest`` names the newest complete one, so a kill mid-write leaves the last good one.

MXNet cannot read back its generator's state, so the loops reseed their generators at every epoch and step
(``loop``): resuming from any checkpoint replays what an uninterrupted run does.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np

from .files import write_atomic

KEEP = 2

log = logging.getLogger(__name__)

# How the optimizer states of a checkpoint are ordered (loop.make_trainer: by structural parameter names).
TRAINER_ORDER = 'structural-names'


def all_finite(net: mx.gluon.Block) -> bool:
    """True when every parameter of ``net`` is finite."""
    for param in net.collect_params().values():
        if param._data is None:  # not initialized yet (deferred)
            continue
        for arr in param.list_data():
            if not np.isfinite(arr.asnumpy()).all():
                return False
    return True


def _checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / 'checkpoints'


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of ``run_dir``, or ``None``."""
    pointer = _checkpoints_dir(run_dir) / 'latest'
    if not pointer.is_file():
        return None
    path = _checkpoints_dir(run_dir) / pointer.read_text().strip()
    return path if (path / 'state.json').is_file() else None


def save_checkpoint(run_dir: str | os.PathLike, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
                    state: dict[str, Any]) -> Path:
    """Write ``net``'s parameters, ``trainer``'s states and ``state`` (JSON: step, epoch, history...) atomically.

    Refuses (``FloatingPointError``) to write non-finite parameters over a good checkpoint.
    """
    if not all_finite(net):
        raise FloatingPointError('refusing to checkpoint: the model has NaN or inf parameters')
    root = _checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(state['step']):08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.', dir=root))
    net.save_parameters(str(tmp / 'model.params'))
    if trainer is not None:
        trainer.save_states(str(tmp / 'trainer.states'))
    full_state = dict(state, python_rng=_py_state(), numpy_rng=_np_state(), trainer_order=TRAINER_ORDER)
    (tmp / 'state.json').write_text(json.dumps(full_state))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(root / 'latest', name)
    for old in sorted(p for p in root.glob('step-*') if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
                    ctx=None) -> dict[str, Any]:
    """Load a checkpoint folder into ``net`` and ``trainer``; returns its ``state`` (RNG states restored)."""
    path = Path(path)
    if not (path / 'state.json').is_file():
        raise FileNotFoundError(f'{path} is not a checkpoint folder (no state.json)')
    net.load_parameters(str(path / 'model.params'), ctx=ctx)
    state = json.loads((path / 'state.json').read_text())
    order = state.pop('trainer_order', None)
    if trainer is not None and (path / 'trainer.states').is_file():
        if order == TRAINER_ORDER:
            trainer.load_states(str(path / 'trainer.states'))
        else:  # an older checkpoint: its optimizer states would be paired with the wrong parameters
            log.warning('%s was written by an older bert_tutorial that ordered optimizer states differently: '
                        'the weights are resumed, the optimizer states (Adam moments) start afresh', path)
    random.setstate(_tuplify(state.pop('python_rng')))
    np_state = state.pop('numpy_rng')
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def resume(run_dir: str | os.PathLike | None, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
           ctx=None) -> dict[str, Any] | None:
    """The state of ``run_dir``'s newest checkpoint, loaded into ``net`` and ``trainer``; ``None`` if there is none."""
    if run_dir is None:
        raise ValueError('resume=True needs checkpoint_dir')
    found = latest_checkpoint(run_dir)
    if found is None:
        log.info('no checkpoint in %s: starting from scratch', run_dir)
        return None
    state = load_checkpoint(found, net, trainer, ctx=ctx)
    log.info('resumed from %s (epoch %s, step %d)', found, state.get('epoch'), state['step'])
    return state


def _py_state():
    return random.getstate()


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _tuplify(obj):
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, list) else obj
