"""Speed, with the same values: ``MatmulLayerNorm``, ``FusedBERTAdam``, oneDNN fusion and INT8 export."""
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm
from .optimizer import FusedBERTAdam

__all__ = ['MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam']
