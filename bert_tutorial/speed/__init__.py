"""The speed plug-in: ``accelerate(net)`` is its one switch (the recipes call it; the tutorial never does).

Behind it: C++ kernels (``KernelLayerNorm``, ``KernelDropout``, ``KernelSelfAttentionCell``, ``KernelGELU``,
``KernelDense``, ``FusedBERTAdam``'s update), each where it beats MXNet's operator on the machine (``choice``), and
``MatmulLayerNorm`` where the kernels do not build. They change nothing off a CPU.
"""
from .accelerate import Acceleration, accelerate
from .choice import choice_record, kernel_choice, use_chosen_kernels
from .kernel_ops import (
    KernelDense,
    KernelDropout,
    KernelGELU,
    KernelLayerNorm,
    KernelSelfAttentionCell,
    standard_ops,
    use_kernels,
)
from .kernels import dense_available, load_kernels
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm
from .optimizer import FusedBERTAdam, grad_global_norm

__all__ = ['accelerate', 'Acceleration', 'MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam',
           'KernelLayerNorm', 'KernelDropout', 'KernelSelfAttentionCell', 'KernelGELU', 'KernelDense', 'use_kernels',
           'standard_ops', 'load_kernels', 'dense_available', 'grad_global_norm', 'kernel_choice', 'choice_record',
           'use_chosen_kernels']
