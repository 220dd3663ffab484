"""The names the tutorial imports with ``from utils import ...``."""
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__all__ = ['PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock']
