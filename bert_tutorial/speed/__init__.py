"""Speed, with the same values: C++ kernels (``KernelLayerNorm``, ``KernelDropout``, ``KernelSelfAttentionCell``,
``KernelGELU``), ``MatmulLayerNorm``, ``FusedBERTAdam``, oneDNN fusion and INT8 export."""
from .kernel_ops import KernelDropout, KernelGELU, KernelLayerNorm, KernelSelfAttentionCell, standard_ops, use_kernels
from .kernels import load_kernels
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm
from .optimizer import FusedBERTAdam

__all__ = ['MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam', 'KernelLayerNorm', 'KernelDropout',
           'KernelSelfAttentionCell', 'KernelGELU', 'use_kernels', 'standard_ops', 'load_kernels']
