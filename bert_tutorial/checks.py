"""Input checks that turn bad arrays into ``ValueError``s naming the argument.

MXNet reads out-of-range indices silently (``Embedding`` clips them, ``gather_nd`` wraps or
returns garbage) or fails deep in C++; these checks run on concrete ``NDArray`` inputs before that.
"""
from __future__ import annotations

import numpy as np
from mxnet import nd


def is_concrete(x) -> bool:
    """True for an ``NDArray`` (imperative call), False for a ``Symbol`` inside a hybridized graph."""
    return isinstance(x, nd.NDArray)


def _values(name: str, x) -> np.ndarray:
    if isinstance(x, nd.NDArray):
        return x.asnumpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f'{name} must be an mxnet NDArray, got {type(x).__name__}')


def _integral(name: str, values: np.ndarray) -> np.ndarray:
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(f'{name} must hold finite integer values, found NaN or inf')
    if values.size and not np.array_equal(values, np.round(values)):
        raise ValueError(f'{name} must hold integer values, found {values[values != np.round(values)][0]}')
    return values.astype(np.int64)


def check_token_ids(words, vocab_size: int, name: str = 'words') -> None:
    """``words``: ``(batch_size, seq_len)`` ids in ``[0, vocab_size)``."""
    values = _values(name, words)
    if values.ndim != 2:
        raise ValueError(f'{name} must have shape (batch_size, seq_len), got shape {values.shape}')
    if 0 in values.shape:
        raise ValueError(f'{name} must hold at least one token per example, got shape {values.shape}')
    ids = _integral(name, values)
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise ValueError(f'{name} must be token ids in [0, {vocab_size}) (vocab_size={vocab_size}), found {bad[0]}')


def check_segments(segments, words_shape: tuple, name: str = 'segments') -> None:
    """``segments``: same shape as the words, values in {0, 1}."""
    values = _values(name, segments)
    if tuple(values.shape) != tuple(words_shape):
        raise ValueError(f'{name} must have the same shape as words {tuple(words_shape)}, got {values.shape}')
    ids = _integral(name, values)
    bad = ids[(ids != 0) & (ids != 1)]
    if bad.size:
        raise ValueError(f'{name} must be segment ids in {{0, 1}}, found {bad[0]}')


def check_valid_len(valid_len, batch_size: int, seq_len: int, name: str = 'valid_len') -> None:
    """``valid_len``: ``(batch_size,)`` lengths in ``[1, seq_len]``."""
    values = _values(name, valid_len)
    if values.shape != (batch_size,):
        raise ValueError(f'{name} must have shape (batch_size,) = ({batch_size},), got {values.shape}')
    lengths = _integral(name, values)
    bad = lengths[(lengths < 1) | (lengths > seq_len)]
    if bad.size:
        raise ValueError(f'{name} must be lengths in [1, {seq_len}] (the sequence length), found {bad[0]}')


def check_attention_mask(mask, shape: tuple, name: str = 'mask') -> None:
    """``mask``: ``(batch_size, num_queries, num_keys)`` of 0s and 1s (1: the query may attend to the key)."""
    values = _values(name, mask)
    if tuple(values.shape) != tuple(shape):
        raise ValueError(f'{name} must be valid lengths (batch_size,) = ({shape[0]},) or a (batch_size, num_queries, '
                         f'num_keys) = {tuple(shape)} matrix, got shape {values.shape}')
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise ValueError(f'{name} must hold 0 (masked) or 1 (attended), found {bad[0]}')


def check_gather_positions(positions, batch_size: int, seq_len: int, name: str = 'masked_positions') -> None:
    """``positions`` in ``gather_nd`` layout: ``(2, num_masked)``, row 0 batch indices, row 1 token positions."""
    values = _values(name, positions)
    if values.ndim != 2 or values.shape[0] != 2:
        raise ValueError(f'{name} must have shape (2, num_masked): a row of batch indices and a row of '
                         f'token positions (the gather_nd layout), got shape {values.shape}')
    idx = _integral(name, values)
    bad = idx[0][(idx[0] < 0) | (idx[0] >= batch_size)]
    if bad.size:
        raise ValueError(f'{name}: batch index {bad[0]} is out of range for a batch of {batch_size} '
                         f'(expected 0 <= index < {batch_size})')
    bad = idx[1][(idx[1] < 0) | (idx[1] >= seq_len)]
    if bad.size:
        raise ValueError(f'{name}: position {bad[0]} is out of range for a sequence of length {seq_len} '
                         f'(expected 0 <= position < {seq_len})')


def check_batch_positions(positions, batch_size: int, seq_len: int, name: str = 'masked_positions') -> None:
    """``positions``: ``(batch_size, num_pred)`` token positions per example, each in ``[0, seq_len)``."""
    values = _values(name, positions)
    if values.ndim != 2 or values.shape[0] != batch_size:
        raise ValueError(f'{name} must have shape (batch_size, num_pred) with batch_size={batch_size}, '
                         f'got shape {values.shape}')
    idx = _integral(name, values)
    bad = idx[(idx < 0) | (idx >= seq_len)]
    if bad.size:
        raise ValueError(f'{name}: position {bad[0]} is out of range for a sequence of length {seq_len} '
                         f'(expected 0 <= position < {seq_len})')
