"""BERTAdam's step and the global gradient norm as plain functions, on the package's C++ kernels and on MXNet's
operators: what ``FusedBERTAdam`` runs and what the machine's choice (``choice``) times. They import neither, so that
the choice can time them and the optimizer can read the choice (no import circle)."""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx


def adam_step_kernel(weights: Sequence[mx.nd.NDArray], grads: Sequence[mx.nd.NDArray], states: Sequence,
                     lrs: Sequence[float], wds: Sequence[float], **hyper) -> None:
    """BERTAdam's step on every weight in one ``bert_adam_update`` call (weights and ``(mean, var)`` states in
    place); ``hyper``: ``beta1``, ``beta2``, ``epsilon``, ``rescale_grad``, ``clip_gradient`` (-1: none)."""
    arrays = []
    for w, g, (mean, var) in zip(weights, grads, states):
        arrays += [w, g, mean, var]
    # repr: the shortest text that reads back as the same number
    mx.nd.bert_adam_update(*arrays, out=list(weights), num_tensors=len(weights),
                           lrs=','.join(repr(float(lr)) for lr in lrs), wds=','.join(repr(float(wd)) for wd in wds),
                           **hyper)


def adam_step_mxnet(weight: mx.nd.NDArray, grad: mx.nd.NDArray, state: tuple, lr: float, wd: float,
                    **hyper) -> None:
    """BERTAdam's step on one weight on MXNet's ``adam_update`` (in place), decay applied to the weight first."""
    if wd:
        weight *= 1.0 - lr * wd
    mean, var = state
    mx.nd.adam_update(weight, grad, mean, var, out=weight, lr=lr, wd=0.0, lazy_update=False, **hyper)


def sum_sq_norm(grads: Sequence[mx.nd.NDArray]) -> mx.nd.NDArray:
    """The L2 norm of ``grads`` (float32 arrays on one CPU context) on ``bert_sum_sq``, shape ``(1,)``."""
    return mx.nd.bert_sum_sq(*grads, num_arrays=len(grads)).sum().sqrt()
