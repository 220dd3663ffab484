"""BERTAdam on fused kernels: the package's ``bert_adam_update`` (all weights in one pass) or MXNet's
``adam_update``; and the global gradient norm on ``bert_sum_sq``."""
from __future__ import annotations

from collections.abc import Sequence

import gluonnlp as nlp
import mxnet as mx
import numpy as np

from .choice import chosen
from .kernels import load_kernels
from .steps import adam_step_kernel, adam_step_mxnet, sum_sq_norm

# Weights per bert_adam_update call: the whole of a BERT-base in one call (MXNet caps an operator's inputs only by
# memory); the Updater hands the optimizer at most this many at a time.
KERNEL_AGGREGATE = 4096


def _on_kernels(arrays: Sequence[mx.nd.NDArray]) -> bool:
    return (load_kernels() and all(a.dtype == np.float32 and a.stype == 'default' for a in arrays)
            and all(a.context.device_type == 'cpu' for a in arrays))


@mx.optimizer.register
class FusedBERTAdam(nlp.optimizer.BERTAdam):
    """GluonNLP's ``BERTAdam`` update (Adam without bias correction, decoupled weight decay), the same values, on a
    fused kernel.

    With the package's C++ kernels (``load_kernels()``) where this machine's choice picks them (``speed.choice``;
    ``kernels=False`` turns them off), every float32 CPU weight of a step is updated by one ``bert_adam_update``
    call: one pass over weights, gradients and states, equal to GluonNLP's ``adamw_update`` bit for bit. Without
    them, each weight runs ``mx.nd.adam_update`` on ``w * (1 - lr * wd)`` (about twice as fast as
    ``multi_adamw_update`` on CPU, equal within float32 round-off): ``w - lr * (m / (sqrt(v) + eps) + wd * w)`` is
    ``adam_update`` with weight decay 0 applied to ``w * (1 - lr * wd)``. Lists of float16 weights take
    ``BERTAdam``'s own path.
    """

    rule = 'bertadam'  # the update it computes, as checkpoints record it (loop.update_rule)

    def __init__(self, kernels: bool = True, **kwargs):
        super().__init__(**kwargs)
        # Each kernel where this machine's choice (speed.choice: measured against MXNet's operators) picks it.
        self.kernels = bool(kernels) and load_kernels() and chosen('adam')
        # The gradient norm's kernel (bert_sum_sq), for global_norm.
        self.norm_kernel = bool(kernels) and load_kernels() and chosen('grad_norm')
        # The Updater passes lists of up to aggregate_num weights; 0 means one weight a call (adam_update's form).
        self.aggregate_num = KERNEL_AGGREGATE if self.kernels else 0

    def global_norm(self, params: Sequence[mx.gluon.Parameter]) -> mx.nd.NDArray:
        """The global gradient norm of ``params`` that ``loop.clipped_update`` clips by: on ``bert_sum_sq`` where
        this machine's choice picks it, else GluonNLP's ``grad_global_norm``."""
        return grad_global_norm(params, kernels=self.norm_kernel)

    def _rescale_and_clip(self) -> dict:
        """The ``rescale_grad`` and ``clip_gradient`` arguments of the kernels (-1: no clipping)."""
        rescale = self.rescale_grad
        if isinstance(rescale, mx.nd.NDArray):  # BERTAdam keeps it as an array once it has run
            rescale = float(rescale.asscalar())
        return {'rescale_grad': rescale, 'clip_gradient': self.clip_gradient if self.clip_gradient else -1.0}

    def update(self, index, weight, grad, state):
        """One step on ``weight`` (or lists of them) in place."""
        if isinstance(index, (list, tuple)):
            if not (self.kernels and _on_kernels(list(weight) + list(grad))):
                for i, w, g, s in zip(index, weight, grad, state):
                    self.update(i, w, g, s)
                return
            self._update_count(index)
            adam_step_kernel(weight, grad, state, self._get_lrs(index), self._get_wds(index), beta1=self.beta1,
                             beta2=self.beta2, epsilon=self.epsilon, **self._rescale_and_clip())
            return
        if weight.dtype != np.float32:
            return super().update(index, weight, grad, state)
        self._update_count(index)
        adam_step_mxnet(weight, grad, state, self._get_lr(index), self._get_wd(index), beta1=self.beta1,
                        beta2=self.beta2, epsilon=self.epsilon, **self._rescale_and_clip())

    def update_multi_precision(self, index, weight, grad, state):
        """``update``, or ``BERTAdam``'s float32 master-weight path for float16 weights."""
        weights = weight if isinstance(index, (list, tuple)) else [weight]
        if self.multi_precision and any(w.dtype == np.float16 for w in weights):
            return super().update_multi_precision(index, weight, grad, state)
        return self.update(index, weight, grad, state)


def grad_global_norm(params: Sequence[mx.gluon.Parameter], kernels: bool = True) -> mx.nd.NDArray:
    """The L2 norm of all the gradients of ``params`` (``grad_req`` not ``'null'``), shape ``(1,)``:
    ``gluonnlp.utils.grad_global_norm``, on ``bert_sum_sq`` when ``kernels`` and the C++ kernels are there and the
    gradients are float32 on one CPU context. That kernel accumulates in float64; MXNet's ``multi_sum_sq``
    accumulates in float32 and comes out about 2% low on a 30522 x 384 embedding gradient."""
    params = [p for p in params if p.grad_req != 'null']
    grads = [p.grad() for p in params] if kernels and params and len(params[0].list_ctx()) == 1 else None
    if not grads or not _on_kernels(grads):
        return nlp.utils.grad_global_norm(params)
    return sum_sq_norm(grads)
