"""Input checks that turn bad arrays and settings into ``ValueError``s naming the argument.

MXNet reads out-of-range indices silently (``Embedding`` clips them, ``gather_nd`` wraps or
returns garbage) or fails deep in C++; these checks run on concrete ``NDArray`` inputs before that.

Shapes are always checked. Values need a copy to the host, which would stall every training step: they are
checked outside ``autograd.record()`` (the tutorial's cells, prediction, evaluation), while a training step's
inputs come from the data transforms, which make valid ids by construction.

A recipe's config (``FinetuneConfig``, ``PretrainConfig``) declares each setting once, with ``option()``: its
default, help text, choices or rule, command-line flags and whether a resume may change it live in the field's
metadata. ``check_fields`` validates a config from it, ``compared_settings`` gives what a resume compares, and
``commands.add_flags`` makes the command line and its ``--help``. This is about sixty lines over
``dataclasses.fields`` rather than a library: tyro, simple-parsing and jsonargparse each generate a parser of their
own (their flag spellings, help layout and error messages), and keeping today's flags (``--no-bucket`` into
``bucket``, hidden aliases, deprecated flags that warn, ``--fast/--no-fast``), the argparse actions that
``--help``, the docs' ``sphinx-argparse`` page and ``benchmarks/record_run.py`` read, and the tested messages
(``lr (--lr) must be a number from 1.2e-38 to 3.4e38, got ...``) would take as much code around any of them.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from mxnet import autograd, nd


def is_concrete(x) -> bool:
    """True for an ``NDArray`` (imperative call), False for a ``Symbol`` inside a hybridized graph."""
    return isinstance(x, nd.NDArray)


def setting(name: str) -> str:
    """A config field as errors name it: also as the command line's flag (``max_len (--max-len)``)."""
    return f'{name} (--{name.replace("_", "-")})'


Rule = tuple[Callable[[Any], bool], str]  # a test of a value, and what it allows (for the error)


def integer(low: int, optional: bool = False, high: int | None = None) -> Rule:
    """An integer >= ``low`` (and <= ``high``; or ``None`` when ``optional``)."""
    def ok(v):
        return (optional and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= low
                                            and (high is None or v <= high))
    allowed = f'an integer >= {low}' if high is None else f'an integer in [{low}, {high}]'
    return ok, allowed + (' or None' if optional else '')


# numpy's generators take seeds below 2**32; MXNet's (a C int) silently wraps larger ones onto smaller seeds.
MAX_SEED = 2**32 - 1


# MXNet reads operator settings (a learning rate, a dropout rate) as float32 and refuses one below its smallest normal
# number ("Out of range value for lr", deep in C++): such a rate is refused here, by name.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def positive() -> Rule:
    """A finite number > 0 that float32 holds (NaN, infinity and numbers below 1.2e-38 are not)."""
    return ((lambda v: isinstance(v, (int, float)) and math.isfinite(v) and FLOAT32_TINY <= v < 3.4e38),
            'a number from 1.2e-38 to 3.4e38')


def fraction() -> Rule:
    """A number in [0, 1) (a dropout rate, a share of the steps): 0, or at least float32's smallest normal number."""
    return (lambda v: isinstance(v, (int, float)) and (v == 0 or FLOAT32_TINY <= v < 1)), \
        '0 or in [1.2e-38, 1)'


def one_of(*choices) -> Rule:
    return (lambda v: v in choices), 'one of ' + ', '.join(repr(c) for c in choices)


def check_settings(values: dict[str, Any], rules: dict[str, Rule], flags: bool = False) -> None:
    """``ValueError`` naming the first of ``values`` that breaks its rule, what it allows and what it got
    (``flags``: name it as a config field and its command-line flag)."""
    for name, (ok, allowed) in rules.items():
        if not ok(values[name]):
            raise ValueError(f'{setting(name) if flags else name} must be {allowed}, got {values[name]!r}')


# ---- the settings of a recipe's config: one field each, declared with option() ---------------------------------

# Why a resume may change a setting (``free``): it says where the run writes or how it reports ('output'), or how it
# computes or resumes, not what ('compute'). Every other setting is compared with the checkpoint's.
FREE = ('output', 'compute')


def option(default: Any, help: str, *, rule: Rule | None = None, choices: tuple = (), flags: dict | None = None,
           hidden: dict | None = None, free: str | None = None, deprecated: str | None = None) -> Any:
    """A config field whose metadata is the setting's one source: ``help`` (its ``--help`` text), ``choices`` (the
    values allowed, on the command line and in ``check_fields``) or ``rule`` (``integer``, ``positive``,
    ``fraction``...), ``free`` (one of ``FREE``: a resume may change it). Its flag is ``--name-with-dashes`` taking a
    value, ``--name/--no-name`` for a bool; or ``flags``, each storing a value (``{'--no-bucket': False}``), and
    ``hidden`` ones left out of ``--help`` (older spellings); with ``deprecated``, what replaces them: a hidden flag
    given says so on one line."""
    if free not in (None, *FREE):
        raise ValueError(f'free must be one of {FREE} or None, got {free!r}')
    return dataclasses.field(default=default, metadata=dict(
        help=help, rule=one_of(*choices) if choices and rule is None else rule, choices=tuple(choices),
        flags=flags or {}, hidden=hidden or {}, free=free, deprecated=deprecated))


def check_fields(config: Any, skip: tuple[str, ...] = ()) -> None:
    """``ValueError`` naming the first field of ``config`` (but ``skip``) that breaks its rule, as ``setting`` names
    it, with what the rule allows and what it got."""
    check_settings({f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
                   {f.name: f.metadata['rule'] for f in dataclasses.fields(config)
                    if f.metadata.get('rule') and f.name not in skip}, flags=True)


def compared_settings(config: Any) -> dict:
    """``config`` as ``dataclasses.asdict`` gives it, without the fields a resume may change (``free``)."""
    free = {f.name for f in dataclasses.fields(config) if f.metadata.get('free')}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in free}


def _shape(name: str, x) -> tuple:
    if not isinstance(x, (nd.NDArray, np.ndarray)):
        raise ValueError(f'{name} must be an mxnet NDArray, got {type(x).__name__}')
    return tuple(x.shape)


def _values(x) -> np.ndarray | None:
    """``x`` on the host, or ``None`` inside ``autograd.record()`` (see the module docstring)."""
    if autograd.is_recording():
        return None
    return x.asnumpy() if isinstance(x, nd.NDArray) else x


def _integral(name: str, values: np.ndarray) -> np.ndarray:
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(f'{name} must hold finite integer values, found NaN or inf')
    if values.size and not np.array_equal(values, np.round(values)):
        raise ValueError(f'{name} must hold integer values, found {values[values != np.round(values)][0]}')
    return values.astype(np.int64)


def as_float_input(x, name: str):
    """An id, segment or length array as the float32 the blocks compute with: integer arrays are cast; float16
    (ids past 2048 are not exact in it) and other types are refused."""
    if isinstance(x, nd.NDArray) and x.dtype != np.float32:
        if np.issubdtype(x.dtype, np.integer) or x.dtype == np.float64:
            return x.astype('float32')
        raise ValueError(f'{name} must hold integers (an integer or float32 array), got dtype {np.dtype(x.dtype).name}')
    return x


def check_token_ids(words, vocab_size: int, name: str = 'words') -> None:
    """``words``: ``(batch_size, seq_len)`` ids in ``[0, vocab_size)``."""
    shape = _shape(name, words)
    if len(shape) != 2:
        raise ValueError(f'{name} must have shape (batch_size, seq_len), got shape {shape}')
    if 0 in shape:
        raise ValueError(f'{name} must hold at least one token per example, got shape {shape}')
    values = _values(words)
    if values is None:
        return
    ids = _integral(name, values)
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise ValueError(f'{name} must be token ids in [0, {vocab_size}) (vocab_size={vocab_size}), found {bad[0]}')


def check_segments(segments, words_shape: tuple, name: str = 'segments') -> None:
    """``segments``: same shape as the words, values in {0, 1}."""
    shape = _shape(name, segments)
    if shape != tuple(words_shape):
        raise ValueError(f'{name} must have the same shape as words {tuple(words_shape)}, got {shape}')
    values = _values(segments)
    if values is None:
        return
    ids = _integral(name, values)
    bad = ids[(ids != 0) & (ids != 1)]
    if bad.size:
        raise ValueError(f'{name} must be segment ids in {{0, 1}}, found {bad[0]}')


def check_valid_len(valid_len, batch_size: int, seq_len: int, name: str = 'valid_len') -> None:
    """``valid_len``: ``(batch_size,)`` lengths in ``[1, seq_len]``."""
    shape = _shape(name, valid_len)
    if shape != (batch_size,):
        raise ValueError(f'{name} must have shape (batch_size,) = ({batch_size},), got {shape}')
    values = _values(valid_len)
    if values is None:
        return
    lengths = _integral(name, values)
    bad = lengths[(lengths < 1) | (lengths > seq_len)]
    if bad.size:
        raise ValueError(f'{name} must be lengths in [1, {seq_len}] (the sequence length), found {bad[0]}')


def check_attention_mask(mask, shape: tuple, name: str = 'mask') -> None:
    """``mask``: ``(batch_size, num_queries, num_keys)`` of 0s and 1s (1: the query may attend to the key)."""
    got = _shape(name, mask)
    if got != tuple(shape):
        raise ValueError(f'{name} must be valid lengths (batch_size,) = ({shape[0]},) or a (batch_size, num_queries, '
                         f'num_keys) = {tuple(shape)} matrix, got shape {got}')
    values = _values(mask)
    if values is None:
        return
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise ValueError(f'{name} must hold 0 (masked) or 1 (attended), found {bad[0]}')


def check_gather_positions(positions, batch_size: int, seq_len: int, name: str = 'masked_positions') -> None:
    """``positions`` in ``gather_nd`` layout: ``(2, num_masked)``, row 0 batch indices, row 1 token positions."""
    shape = _shape(name, positions)
    if len(shape) != 2 or shape[0] != 2:
        raise ValueError(f'{name} must have shape (2, num_masked): a row of batch indices and a row of '
                         f'token positions (the gather_nd layout), got shape {shape}')
    values = _values(positions)
    if values is None:
        return
    idx = _integral(name, values)
    bad = idx[0][(idx[0] < 0) | (idx[0] >= batch_size)]
    if bad.size:
        raise ValueError(f'{name}: batch index {bad[0]} is out of range for a batch of {batch_size} '
                         f'(expected 0 <= index < {batch_size})')
    _check_positions(name, idx[1], seq_len)


def check_batch_positions(positions, batch_size: int, seq_len: int, name: str = 'masked_positions') -> None:
    """``positions``: ``(batch_size, num_pred)`` token positions per example, each in ``[0, seq_len)``."""
    shape = _shape(name, positions)
    if len(shape) != 2 or shape[0] != batch_size:
        raise ValueError(f'{name} must have shape (batch_size, num_pred) with batch_size={batch_size}, '
                         f'got shape {shape}')
    values = _values(positions)
    if values is not None:
        _check_positions(name, _integral(name, values), seq_len)


def _check_positions(name: str, positions: np.ndarray, seq_len: int) -> None:
    bad = positions[(positions < 0) | (positions >= seq_len)]
    if bad.size:
        raise ValueError(f'{name}: position {bad[0]} is out of range for a sequence of length {seq_len} '
                         f'(expected 0 <= position < {seq_len})')
