"""Where to compute: MXNet contexts from the command line's ``cpu``/``gpu``, or as the caller gives them."""
from __future__ import annotations

import mxnet as mx


def as_context_list(ctx) -> list[mx.Context]:
    """``ctx`` (a context or a list of them) as a non-empty list of contexts."""
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
    if not contexts or not all(isinstance(c, mx.Context) for c in contexts):
        raise ValueError(f'ctx must be an mxnet Context or a list of them, got {ctx!r}')
    return contexts


def contexts(kind: str) -> list[mx.Context]:
    """``'cpu'``, or every visible GPU for ``'gpu'``."""
    if kind not in ('cpu', 'gpu'):
        raise ValueError(f"ctx must be 'cpu' or 'gpu', got {kind!r}")
    if kind == 'gpu':
        n = mx.context.num_gpus()
        if n == 0:
            raise ValueError('ctx gpu: no GPU is visible to MXNet')
        return [mx.gpu(i) for i in range(n)]
    return [mx.cpu()]
