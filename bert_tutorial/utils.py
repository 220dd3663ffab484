"""The names the tutorial imports with ``from utils import ...``."""
from .predict import predict_sentiment, predict_sentiments
from .training import train_loop
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__all__ = ['PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
           'train_loop', 'predict_sentiment', 'predict_sentiments']
