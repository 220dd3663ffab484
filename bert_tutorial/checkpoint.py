"""Atomic training checkpoints (parameters, optimizer state, progress, RNG state).

A checkpoint is a folder ``<run_dir>/checkpoints/step-XXXXXXXX/`` holding ``model.params``,
``trainer.states``, ``state.json`` and, for a run that keeps its best epoch, ``best.params`` (a hard link to the
file of the checkpoint that first held them). It is written under a temporary name and renamed into place, and
the newest folder with a ``state.json`` is the newest complete one, so a kill mid-write leaves the last good one.
``state.json`` records the sha256 of every other file, checked before anything is read back.

MXNet cannot read back its generator's state, so the loops reseed their generators at every epoch and step
(``loop``): resuming from any checkpoint replays what an uninterrupted run does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet.base import MXNetError

from .assets import sha256_file
from .files import writing

KEEP = 2
DATA_KEY = 'data_sha256'  # in a run's settings: {setting: sha256} of the data files it reads (data_digests)

log = logging.getLogger(__name__)

# How the optimizer states of a checkpoint are ordered (loop.make_trainer: by structural parameter names).
TRAINER_ORDER = 'structural-names'


BEST = 'best.params'
STATE_DIGEST = 'state_sha256'  # in state.json: content_digest of the rest of it


def content_digest(obj: dict[str, Any], without: str) -> str:
    """The sha256 of a JSON object's content, without its key ``without`` (where the digest itself is kept): its
    JSON with sorted keys, no spaces, UTF-8. Re-indenting or reordering the file keeps it; any changed value does
    not."""
    body = {k: v for k, v in obj.items() if k != without}
    text = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def nonfinite_parameter(net: mx.gluon.Block) -> str | None:
    """The structural name of the first parameter of ``net`` holding a NaN or an infinity, or ``None``."""
    for name, param in net._collect_params_with_prefix().items():
        if param._data is None:  # not initialized yet (deferred)
            continue
        for arr in param.list_data():
            if not np.isfinite(arr.asnumpy()).all():
                return name
    return None


def all_finite(net: mx.gluon.Block) -> bool:
    """True when every parameter of ``net`` is finite."""
    return nonfinite_parameter(net) is None


def data_digests(files: dict[str, str | os.PathLike | None], pattern: str = '*.txt') -> dict[str, str]:
    """``{setting: sha256}`` of the data files (or folders of ``pattern`` files: a corpus's ``*.txt``, a model
    folder's ``*``) a run reads, for its checkpoints' settings: a resumed run then refuses data (or a base model)
    changed in between. Settings that name no existing file are left out (the run's own reading names them; a
    built-in model's name is a verified asset)."""
    digests = {}
    for name, path in files.items():
        if path is None:
            continue
        path = Path(path)
        if path.is_file():
            digests[name] = sha256_file(path)
        elif path.is_dir():  # its files' names and contents, in a fixed order
            h = hashlib.sha256()
            for f in sorted(path.rglob(pattern)):
                relative = f.relative_to(path)
                # a model folder's hidden files (.lock, temporaries) are not the model
                hidden = pattern == '*' and any(part.startswith('.') for part in relative.parts)
                if f.is_file() and not hidden:
                    h.update(f'{relative}\0{sha256_file(f)}\n'.encode())
            digests[name] = h.hexdigest()
    return digests


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
                    state: dict[str, Any], best: bool | tuple[Path, str | None] | None = None) -> Path:
    """Write ``net``'s parameters, ``trainer``'s states and ``state`` (JSON: step, epoch, history, the run's
    ``settings``...) atomically, with the sha256 of each file; temporary folders of killed runs are removed.

    ``best``: the parameters of the run's best epoch, kept in the checkpoint as ``best.params``: ``True`` when they
    are ``net``'s (written now), or ``(file, sha256)`` of an earlier checkpoint's, linked after it is verified
    (``ValueError`` naming it when it changed). Refuses (``FloatingPointError``) to write non-finite parameters over
    a good checkpoint.
    """
    bad = nonfinite_parameter(net)
    if bad is not None:
        raise FloatingPointError(f'refusing to checkpoint: the model has NaN or inf parameters ({bad})')
    root = _checkpoints_dir(run_dir)
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob('.step-*'):  # a run killed while writing; the out folder's lock keeps others away
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{int(state['step']):08d}"
    final = root / name
    with writing(final):
        tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.', dir=root))
    try:  # a full disk: one line naming the checkpoint (writing), and no temporary folder left (finally)
        with writing(final):
            net.save_parameters(str(tmp / 'model.params'))
            if trainer is not None:
                trainer.save_states(str(tmp / 'trainer.states'))
        if best is not None:
            # A hard link: no second copy of the weights on disk, and no file outside the checkpoint to go missing
            # (or to be replaced without the state that records it: the folder is renamed into place as one).
            with writing(final):
                _link(tmp / 'model.params' if best is True else best[0], tmp / BEST)
        digests = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        if best is not None and best is not True and best[1] is not None and digests[BEST] != best[1]:
            raise ValueError(f'{best[0]} does not match the sha256 recorded when it was written: the parameters of '
                             'the best epoch were damaged or changed; start afresh in another out folder')
        full_state = dict(state, python_rng=_py_state(), numpy_rng=_np_state(), trainer_order=TRAINER_ORDER,
                          sha256=digests)
        full_state[STATE_DIGEST] = content_digest(full_state, STATE_DIGEST)
        with writing(final):
            (tmp / 'state.json').write_text(json.dumps(full_state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename
    for old in checkpoints(run_dir)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise ValueError(f'{source} is missing: it held the parameters of the best epoch; start afresh in another '
                         'out folder') from None
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


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
    if STATE_DIGEST in state:
        if state[STATE_DIGEST] != content_digest(state, STATE_DIGEST):
            raise ValueError(f'{path}/state.json does not match the {STATE_DIGEST} it records: it was edited or '
                             'damaged')
    elif 'sha256' in state:  # 0.2 to 0.4 (0.1 recorded no digests at all: _compare and load_checkpoint warn)
        log.warning('%s/state.json was written by bert_tutorial 0.4 or earlier: state.json itself cannot be '
                    'verified', path)
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
        raise ValueError(f'{path}/model.params cannot be loaded: {mxnet_message(err)}') from None
    bad = nonfinite_parameter(net)
    if bad is not None:
        raise ValueError(f'{path}/model.params holds NaN or inf ({bad})')
    order = state.pop('trainer_order', None)
    if trainer is not None and (path / 'trainer.states').is_file():
        if order == TRAINER_ORDER and 'sha256' in state:  # written by this version
            load_trainer_states(trainer, path / 'trainer.states')
        else:
            log.warning('%s was written by an older bert_tutorial: the weights are resumed, the optimizer states '
                        '(Adam moments) start afresh', path)
            trainer.optimizer.begin_num_update = trainer.optimizer.num_update = int(state['step'])
    random.setstate(_tuplify(state.pop('python_rng')))
    np_state = state.pop('numpy_rng')
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def load_trainer_states(trainer: mx.gluon.Trainer, path: Path) -> None:
    """The optimizer states (Adam's moments) and update counts of ``path`` into ``trainer``, whose optimizer stays
    the one the run was given: Gluon's ``load_states`` would put the pickled optimizer of the run that wrote the file
    in its place (a ``--fast`` checkpoint resumed with ``--no-fast`` would step on the speed plug-in's optimizer, or on
    a GPU build its kernels). The update rule is the same either way: the run settings record it."""
    own = trainer.optimizer
    trainer.load_states(str(path))
    loaded = trainer.optimizer
    if loaded is own or trainer._update_on_kvstore:  # noqa: SLF001 -- make_trainer never updates on the kvstore
        return
    own.begin_num_update, own.num_update = loaded.begin_num_update, loaded.num_update
    own._all_index_update_counts = loaded._all_index_update_counts  # noqa: SLF001 -- the counts the schedule reads
    own._index_update_count = own._all_index_update_counts[0]  # noqa: SLF001
    own.param_dict = loaded.param_dict
    for updater in trainer._updaters:  # noqa: SLF001 -- Gluon keeps one updater per context, each with the optimizer
        updater.optimizer = own
    trainer._optimizer = own  # noqa: SLF001


def check_fresh_start(run_dir: str | os.PathLike) -> None:
    """Refuse to start a run afresh where another run left checkpoints: they would mix (the newest step wins)."""
    found = [p.name for p in _checkpoints_dir(run_dir).glob('step-*')]
    if found:
        raise ValueError(f'{Path(run_dir)} holds checkpoints of an earlier run ({", ".join(sorted(found))}): pass '
                         f'resume (--resume) to continue it, or choose another out folder (or delete '
                         f'{_checkpoints_dir(run_dir)})')


def check_run_dir(run_dir: str | os.PathLike, resume: bool, settings: dict[str, Any],
                  accept: Collection[str] = ()) -> dict[str, Any] | None:
    """Before any work: refuse to resume ``run_dir`` with ``settings`` that differ from those its newest intact
    checkpoint (or, for a finished run, its ``metrics.json``) was written with (the saved state would mean something
    else, or the schedule would change), or a folder whose checkpoints are all damaged; refuse to start afresh over
    another run's checkpoints or over a finished run. Returns the ``metrics.json`` of a finished run that ``resume``
    finds (there is nothing left to do), else ``None``. ``accept``: settings that may differ (the caller said so)."""
    finished = finished_run(run_dir)
    if not resume:
        check_fresh_start(run_dir)
        if finished is not None:
            raise ValueError(f'{Path(run_dir)} holds a finished run (metrics.json): choose another out folder, or '
                             f'delete that one (--resume on it says that it has finished)')
        _check_nothing_to_overwrite(run_dir)
        return None
    if finished is None and not checkpoints(run_dir):  # a resume that will start from scratch
        _check_nothing_to_overwrite(run_dir)
    if finished is not None:
        # metrics.json records the config, not the data digests (there is nothing left to resume on that data)
        _compare(Path(run_dir) / 'metrics.json', finished.get('config'),
                 {k: v for k, v in settings.items() if k != DATA_KEY}, what='the finished run', accept=accept)
        return finished
    for path, state in _intact(run_dir, warn=False):
        _compare(path, state.get('settings'), settings, accept=accept)
        best_parameters(path, state)
        return None
    return None


def latest_settings(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The settings recorded by ``run_dir``'s newest intact checkpoint; ``None`` when there is none."""
    for _, state in _intact(run_dir, warn=False):
        return state.get('settings')
    return None


# What a run saves into its out folder at the end (save_model): a folder that holds one of them before the run has any
# checkpoint there is somebody else's (a saved model, an export, the user's own files), which the run would replace.
MODEL_FILES = ('config.json', 'vocab.json', 'model.params')


def _check_nothing_to_overwrite(run_dir: str | os.PathLike) -> None:
    found = [name for name in MODEL_FILES if os.path.lexists(Path(run_dir) / name)]
    if found:
        raise ValueError(f'out (--out): {Path(run_dir)} already holds {", ".join(found)}, which this run would '
                         'replace with its own (a saved model, an export or your files); choose another out folder')


def finished_run(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``metrics.json`` of ``run_dir`` (``finetune`` and ``pretrain`` write it last: the run finished), or
    ``None`` when there is none; ``ValueError`` when it cannot be read."""
    path = Path(run_dir) / 'metrics.json'
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise ValueError(f'{path} cannot be read: {err}; it marks a finished run: choose another out folder, or '
                         'delete that one') from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get('history'), list) or not metrics['history']:
        raise ValueError(f'{path} is not the metrics of a finished run (no history); choose another out folder, or '
                         'delete that one')
    return metrics


def remove_checkpoints(run_dir: str | os.PathLike) -> None:
    """Delete ``run_dir/checkpoints`` (with ``best.params``): they exist to resume a run that did not finish."""
    root = _checkpoints_dir(run_dir)
    if root.exists():
        shutil.rmtree(root)
        log.info('the run finished: removed %s (keep_checkpoints / --keep-checkpoints keeps them)', root)


def best_parameters(path: str | os.PathLike, state: dict[str, Any]) -> tuple[Path, str | None] | None:
    """``(file, sha256)`` of the best epoch's parameters that the checkpoint ``path`` (its ``state``) recorded, or
    ``None`` when it recorded no best epoch. The sha256 is ``None`` for a checkpoint of bert_tutorial 0.4, which
    kept them in ``checkpoints/best.params`` unrecorded. ``ValueError`` naming the file when it is missing."""
    if not state.get('best'):
        return None
    path = Path(path)
    digests = state.get('sha256') or {}
    if BEST in digests:
        return path / BEST, digests[BEST]  # read_state verified it
    legacy = path.parent / BEST
    if not legacy.is_file():
        raise ValueError(f'resume: {legacy} is missing: the run kept the parameters of its best epoch (epoch '
                         f'{state["best"].get("epoch")}) there and needs them at the end; start afresh in another out '
                         'folder (or with --select last)')
    log.warning('%s was written by an older bert_tutorial without a sha256: it can only be checked for NaN', legacy)
    check_finite_file(legacy)
    return legacy, None


def mxnet_message(err: Exception) -> str:
    """The line of an MXNet error that says what failed (its text starts with a C++ traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in reversed(lines) if not line.startswith(('File ', 'Traceback', '['))),
                lines[-1] if lines else type(err).__name__)


def check_finite_file(path: Path) -> None:
    """``ValueError`` naming ``path`` when it is not an MXNet parameter file or holds a NaN or an infinity."""
    try:
        arrays = mx.nd.load(str(path))
    except MXNetError as err:
        raise ValueError(f'{path} cannot be read as parameters: {mxnet_message(err)}') from None
    named = arrays.items() if isinstance(arrays, dict) else enumerate(arrays)
    for name, arr in named:
        if not np.isfinite(arr.asnumpy()).all():
            raise ValueError(f'{path} holds NaN or inf ({name}): the file is damaged; start afresh in another out '
                             'folder')


def _intact(run_dir: str | os.PathLike, warn: bool = True) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(folder, state)`` of ``run_dir``'s intact checkpoints, newest first (damaged ones passed over, with a
    warning); ``ValueError`` when there are checkpoints and none of them is intact."""
    paths = checkpoints(run_dir)
    damage = []
    for path in paths:
        try:
            state = read_state(path)
        except ValueError as err:
            if warn:
                log.warning('%s; trying the checkpoint before it', err)
            damage.append(str(err))
            continue
        yield path, state
    if paths:
        raise ValueError(f'no checkpoint of {_checkpoints_dir(run_dir)} is intact: resume is not possible '
                         f'({"; ".join(damage)}); start afresh in another out folder (or delete that one)')


def _compare(path: Path, saved: dict | None, settings: dict[str, Any], what: str = 'the checkpoint',
             accept: Collection[str] = ()) -> None:
    if saved is None:
        log.warning('%s was written before checkpoints recorded their settings: whether this run continues it '
                    'with the same ones cannot be checked', path)
        return
    now = json.loads(json.dumps(settings))  # as saved: tuples become lists
    if DATA_KEY in now and DATA_KEY not in saved:
        log.warning('%s was written before checkpoints recorded the sha256 of the data: whether the data files '
                    'changed since cannot be checked', path)
    for name in sorted(set(now.get(DATA_KEY, {})) & set(saved.get(DATA_KEY) or {})):
        if now[DATA_KEY][name] != saved[DATA_KEY][name]:
            raise ValueError(f'resume: the {name} data {now.get(name)} changed since the checkpoint {path} was '
                             f'written (its sha256 differs): resume with the data the run was started on, or start '
                             f'afresh in another out folder (or delete {path.parent})')
    for key in sorted(set(now) & set(saved) - {DATA_KEY} - set(accept)):
        if now[key] != saved[key]:
            raise ValueError(f'resume: {what} {path} was written with {key}={saved[key]!r}, this run has '
                             f'{key}={now[key]!r}; resume with the same {key}, or start afresh in another out '
                             f'folder (or delete {path.parent})')


def resume(run_dir: str | os.PathLike | None, net: mx.gluon.Block, trainer: mx.gluon.Trainer | None,
           ctx=None, settings: dict[str, Any] | None = None, accept: Collection[str] = ()) -> dict[str, Any] | None:
    """The state of ``run_dir``'s newest intact checkpoint (and its folder, ``checkpoint_path``), loaded into
    ``net`` and ``trainer``; ``None`` if there is none. A damaged newest checkpoint is passed over, with a warning,
    for the one before it; a folder whose
    checkpoints are all damaged is refused. With ``settings``, a checkpoint written with other ones is refused
    (but for those in ``accept``)."""
    if run_dir is None:
        raise ValueError('resume=True needs checkpoint_dir')
    for path, state in _intact(run_dir):
        if settings is not None:
            _compare(path, state.get('settings'), settings, accept=accept)
        best_parameters(path, state)  # before any training: the end of the run needs them
        try:
            state = load_checkpoint(path, net, trainer, ctx=ctx, state=state)
        except ValueError as err:
            log.warning('%s; trying the checkpoint before it', err)
            continue
        log.info('resumed from %s (epoch %s, step %d)', path, state.get('epoch'), state['step'])
        state['checkpoint_path'] = path
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


class BestParameters:
    """A copy of ``net``'s parameters: with a ``checkpoint_dir``, in its checkpoints' ``best.params`` (verified by
    the sha256 their state records; a resumed run finds them there), else in memory."""

    def __init__(self, net, checkpoint_dir: str | Path | None):
        self.net, self._arrays = net, None
        self.on_disk = checkpoint_dir is not None
        self.pending = False  # kept, not yet written: the checkpoint written next holds them
        self.path: Path | None = None
        self.digest: str | None = None

    def keep(self) -> None:
        if self.on_disk:  # train_loop writes a checkpoint right after: its parameters are these
            self.pending = True
        else:
            self._arrays = {k: p.data().copy() for k, p in self.net._collect_params_with_prefix().items()}

    def resumed(self, checkpoint: Path, state: dict) -> None:
        """The best parameters that the checkpoint a run resumed from recorded."""
        found = best_parameters(checkpoint, state)
        if found is not None:
            self.path, self.digest = found

    def for_checkpoint(self) -> bool | tuple[Path, str | None] | None:
        """What the next checkpoint keeps as its ``best.params`` (``save_checkpoint``'s ``best``)."""
        return True if self.pending else (self.path, self.digest) if self.path is not None else None

    def written(self, checkpoint: Path) -> None:
        if (checkpoint / BEST).is_file():
            self.path = checkpoint / BEST
            self.digest = json.loads((checkpoint / 'state.json').read_text())['sha256'][BEST]
            self.pending = False

    def restore(self) -> None:
        if not self.on_disk:
            for k, p in self.net._collect_params_with_prefix().items():
                p.set_data(self._arrays[k])
            return
        if self.path is None or not self.path.is_file():
            raise ValueError(f'{self.path} is missing: it held the parameters of the best epoch')
        if self.digest is None:
            check_finite_file(self.path)
        elif sha256_file(self.path) != self.digest:
            raise ValueError(f'{self.path} does not match the sha256 recorded when it was written: the parameters of '
                             'the best epoch were damaged or changed; start afresh in another out folder')
        self.net.load_parameters(str(self.path), ctx=self.net.collect_params().list_ctx())
        bad = nonfinite_parameter(self.net)
        if bad is not None:
            raise ValueError(f'{self.path} holds NaN or inf ({bad})')
