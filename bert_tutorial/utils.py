"""The names the tutorial imports with ``from utils import ...``."""
from .tutorial import (
    AddNorm,
    EncoderBlock,
    MultiHeadAttention,
    PositionalEncoding,
    PositionWiseFFN,
    predict_sentiment,
    train_loop,
)

__all__ = ['PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
           'train_loop', 'predict_sentiment']
