"""The names the tutorial imports with ``from utils import ...``."""
from .finetuning import train_loop
from .predict import predict_sentiment
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__all__ = ['PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
           'train_loop', 'predict_sentiment']
