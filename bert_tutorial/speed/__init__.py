"""Speed, with the same values: C++ kernels (``KernelLayerNorm``, ``KernelDropout``), ``MatmulLayerNorm``,
``FusedBERTAdam``, oneDNN fusion and INT8 export."""
from .kernel_ops import KernelDropout, KernelLayerNorm, standard_ops, use_kernels
from .kernels import load_kernels
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm
from .optimizer import FusedBERTAdam

__all__ = ['MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam', 'KernelLayerNorm', 'KernelDropout',
           'use_kernels', 'standard_ops', 'load_kernels']
