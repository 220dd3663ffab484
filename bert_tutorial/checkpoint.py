"""Atomic training checkpoints (parameters, optimizer state, progress, RNG state).

A checkpoint is a folder ``<run_dir>/checkpoints/step-XXXXXXXX/`` holding ``model.params``,
``trainer.states`` and ``state.json``. It is written under a temporary name and renamed into place, and
the newest folder with a ``state.json`` is the newest complete one, so a kill mid-write leaves the last good one.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet.base import MXNetError

from .assets import sha256_file
from .files import writing

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


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """``run_dir``'s complete checkpoint folders, newest first."""
    root = _checkpoints_dir(run_dir)
    return sorted((p for p in root.glob('step-*') if (p / 'state.json').is_file()), reverse=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of ``run_dir``, or ``None``."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def save_checkpoint(run_dir: str | os.PathLike, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
                    state: dict[str, Any]) -> Path:
    """Write ``net``'s parameters, ``trainer``'s states and ``state`` (JSON: step, epoch, history, the run's
    ``settings``...) atomically, with the sha256 of each file; temporary folders of killed runs are removed.

    Refuses (``FloatingPointError``) to write non-finite parameters over a good checkpoint.
    """
    if not all_finite(net):
        raise FloatingPointError('refusing to checkpoint: the model has NaN or inf parameters')
    root = _checkpoints_dir(run_dir)
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob('.step-*'):  # a run killed while writing; the out folder's lock keeps others away
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{int(state['step']):08d}"
    final = root / name
    with writing(final):
        tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.', dir=root))
    try:
        with writing(final):  # a full disk: one line naming the checkpoint, and no temporary folder left
            net.save_parameters(str(tmp / 'model.params'))
            if trainer is not None:
                trainer.save_states(str(tmp / 'trainer.states'))
            digests = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
            full_state = dict(state, python_rng=_py_state(), numpy_rng=_np_state(), trainer_order=TRAINER_ORDER,
                              sha256=digests)
            (tmp / 'state.json').write_text(json.dumps(full_state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename
    for old in checkpoints(run_dir)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``state.json``, its files checked against the sha256 it records (``ValueError`` when a file
    is damaged; checkpoints of bert_tutorial 0.1 record none)."""
    path = Path(path)
    try:
        state = json.loads((path / 'state.json').read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f'{path}/state.json cannot be read: {err}') from None
    if not isinstance(state, dict) or 'step' not in state or not isinstance(state.get('sha256', {}), dict):
        raise ValueError(f'{path}/state.json is not a checkpoint state')
    for name, digest in state.get('sha256', {}).items():
        if not (path / name).is_file() or sha256_file(path / name) != digest:
            raise ValueError(f'{path / name} is missing or does not match the sha256 in state.json')
    return state


def load_checkpoint(path: str | os.PathLike, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
                    ctx=None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint folder into ``net`` and ``trainer``; returns its ``state`` (RNG states restored).

    ``state``: the folder's state, already read (``read_state``). A checkpoint written before checkpoints recorded
    their settings (bert_tutorial 0.1) gives its weights; its optimizer (another class, a constant learning rate)
    is not loaded: the Adam moments start afresh and the schedule continues from the checkpoint's step.
    """
    path = Path(path)
    if not (path / 'state.json').is_file():
        raise FileNotFoundError(f'{path} is not a checkpoint folder (no state.json)')
    state = dict(state) if state is not None else read_state(path)
    try:
        net.load_parameters(str(path / 'model.params'), ctx=ctx)
    except MXNetError as err:
        raise ValueError(f'{path}/model.params cannot be loaded: {str(err).splitlines()[0]}') from None
    order = state.pop('trainer_order', None)
    if trainer is not None and (path / 'trainer.states').is_file():
        if order == TRAINER_ORDER and 'sha256' in state:  # written by this version
            trainer.load_states(str(path / 'trainer.states'))
        else:
            log.warning('%s was written by an older bert_tutorial: the weights are resumed, the optimizer states '
                        '(Adam moments) start afresh', path)
            trainer.optimizer.begin_num_update = trainer.optimizer.num_update = int(state['step'])
    random.setstate(_tuplify(state.pop('python_rng')))
    np_state = state.pop('numpy_rng')
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def check_fresh_start(run_dir: str | os.PathLike) -> None:
    """Refuse to start a run afresh where another run left checkpoints: they would mix (the newest step wins)."""
    found = [p.name for p in _checkpoints_dir(run_dir).glob('step-*')]
    if found:
        raise ValueError(f'{Path(run_dir)} holds checkpoints of an earlier run ({", ".join(sorted(found))}): pass '
                         f'resume (--resume) to continue it, or choose another out folder (or delete '
                         f'{_checkpoints_dir(run_dir)})')


def check_run_dir(run_dir: str | os.PathLike, resume: bool, settings: dict[str, Any]) -> None:
    """Before any work: refuse to resume ``run_dir`` with ``settings`` that differ from those its newest intact
    checkpoint was written with (the saved state would mean something else, or the schedule would change), or a
    folder whose checkpoints are all damaged; refuse to start afresh over another run's checkpoints."""
    if not resume:
        check_fresh_start(run_dir)
        return
    for path, state in _intact(run_dir, warn=False):
        _compare(path, state.get('settings'), settings)
        return


def _intact(run_dir: str | os.PathLike, warn: bool = True) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(folder, state)`` of ``run_dir``'s intact checkpoints, newest first (damaged ones passed over, with a
    warning); ``ValueError`` when there are checkpoints and none of them is intact."""
    paths = checkpoints(run_dir)
    for path in paths:
        try:
            state = read_state(path)
        except ValueError as err:
            if warn:
                log.warning('%s; trying the checkpoint before it', err)
            continue
        yield path, state
    if paths:
        raise ValueError(f'no checkpoint of {_checkpoints_dir(run_dir)} is intact: resume is not possible; start '
                         'afresh in another out folder (or delete that one)')


def _compare(path: Path, saved: dict | None, settings: dict[str, Any]) -> None:
    if saved is None:
        log.warning('%s was written before checkpoints recorded their settings: whether this run continues it '
                    'with the same ones cannot be checked', path)
        return
    now = json.loads(json.dumps(settings))  # as saved: tuples become lists
    for key in sorted(set(now) & set(saved)):
        if now[key] != saved[key]:
            raise ValueError(f'resume: the checkpoint {path} was written with {key}={saved[key]!r}, this run has '
                             f'{key}={now[key]!r}; resume with the same {key}, or start afresh in another out '
                             f'folder (or delete {path.parent})')


def resume(run_dir: str | os.PathLike | None, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
           ctx=None, settings: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The state of ``run_dir``'s newest intact checkpoint, loaded into ``net`` and ``trainer``; ``None`` if there
    is none. A damaged newest checkpoint is passed over, with a warning, for the one before it; a folder whose
    checkpoints are all damaged is refused. With ``settings``, a checkpoint written with other ones is refused."""
    if run_dir is None:
        raise ValueError('resume=True needs checkpoint_dir')
    for path, state in _intact(run_dir):
        if settings is not None:
            _compare(path, state.get('settings'), settings)
        try:
            state = load_checkpoint(path, net, trainer, ctx=ctx, state=state)
        except ValueError as err:
            log.warning('%s; trying the checkpoint before it', err)
            continue
        log.info('resumed from %s (epoch %s, step %d)', path, state.get('epoch'), state['step'])
        return state
    log.info('no checkpoint in %s: starting from scratch', run_dir)
    return None


def _py_state():
    return random.getstate()


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _tuplify(obj):
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, list) else obj
