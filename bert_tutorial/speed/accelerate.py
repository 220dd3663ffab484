"""The speed plug-in's one switch: ``accelerate(net)`` puts the kernels this machine's choice picks into ``net`` and
returns the optimizer to train it with.

    acceleration = accelerate(net)
    train_loop(net, ..., optimizer=acceleration.optimizer)

On a CPU: each C++ kernel where it beats MXNet's operator here (``choice``: measured once, cached;
``$BERT_TUTORIAL_KERNEL_CHOICE`` overrides), the dropout kernel (other masks than MXNet's ``Dropout`` from the same
seed), and ``FusedBERTAdam`` (GluonNLP's ``BERTAdam`` update, fused). Anywhere else it changes nothing and returns
GluonNLP's ``BERTAdam``: the kernels are CPU operators. Either way one log line says what it did.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import mxnet as mx

from ..devices import as_context_list
from .choice import OPERATORS, use_chosen_kernels
from .kernels import load_kernels
from .optimizer import FusedBERTAdam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acceleration:
    """What ``accelerate`` did: ``on`` (anything at all), ``dropout`` (the dropout kernel runs: its masks are not
    MXNet's), ``swapped`` (blocks replaced, by kind), ``optimizer`` (for ``train_loop``/``make_trainer``), ``choice``
    (the machine's kernel choice, as ``metrics.json`` records it; ``None`` off a CPU) and the ``message`` logged."""

    on: bool
    dropout: bool
    optimizer: str | type
    message: str
    swapped: dict = field(default_factory=dict)
    choice: dict | None = None


def _contexts(net, ctx) -> list[mx.Context]:
    """``ctx`` as a list, else the contexts of ``net``'s parameters (those initialized or waiting for their shape)."""
    if ctx is not None:
        return as_context_list(ctx)
    found = set()
    for param in net.collect_params().values():
        try:
            found.update(param.list_ctx())
        except RuntimeError:  # not initialized yet: it will be where the caller initializes it
            continue
    return sorted(found, key=str) or [mx.cpu()]


def accelerate(net, ctx: mx.Context | Sequence[mx.Context] | None = None, *, dropout: bool = True,
               layer_norm: bool = True, ops: bool = True) -> Acceleration:
    """Speed ``net`` up in place for training on ``ctx`` (default: where its parameters are; call it after they are
    initialized or loaded, before ``hybridize``). ``dropout=False`` keeps MXNet's ``Dropout`` (its masks);
    ``layer_norm=False``/``ops=False`` keep MXNet's LayerNorm / its dense, softmax, GELU and attention operators
    (what the deprecated ``--native-layer-norm``/``--mxnet-ops`` asked for). Off a CPU nothing changes."""
    contexts = _contexts(net, ctx)
    where = ', '.join(str(c) for c in contexts)
    if any(c.device_type != 'cpu' for c in contexts):
        message = (f"speed: nothing to do on {where} (the kernels are CPU operators): MXNet's operators and "
                   "GluonNLP's BERTAdam")
        log.info('%s', message)
        return Acceleration(False, False, 'bertadam', message)
    counts = use_chosen_kernels(net, layer_norm=layer_norm, dropout=dropout, ops=ops)
    record = counts.pop('choice')
    if counts.pop('kernels'):
        # what runs in this net (the blocks swapped, the optimizer's kernels), not only what the machine's choice allows
        running = [op for op in OPERATORS if record['kernels'][op] and counts.get(op, 1)]
        mxnet = [f'{op} (as MatmulLayerNorm)' if op == 'layer_norm' and counts['layer_norm'] else op
                 for op in OPERATORS if op not in running]
        message = (f"speed: C++ kernels for {', '.join(running) or 'nothing'}; MXNet's operators for "
                   f"{', '.join(mxnet) or 'nothing'} (the kernels' choice: {record['decided_by']}); dropout: "
                   f"{'the C++ kernel' if counts['dropout'] else 'MXNet'}'s masks")
    else:
        message = ("speed: no C++ kernels here (see above): MXNet's operators, MatmulLayerNorm for LayerNorm"
                   if counts['layer_norm'] else "speed: no C++ kernels here (see above): MXNet's operators")
        message += ", FusedBERTAdam on MXNet's adam_update"
    log.info('%s', message)
    return Acceleration(True, counts['dropout'] > 0, FusedBERTAdam, message, counts, record)


def dropout_kernel_available(ctx: str | mx.Context) -> bool:
    """Whether ``accelerate`` would run the dropout kernel on ``ctx`` (``'cpu'``/``'gpu'`` or a context): on a CPU
    where the C++ kernels load (building them on first use)."""
    kind = ctx if isinstance(ctx, str) else ctx.device_type
    return kind == 'cpu' and load_kernels()
