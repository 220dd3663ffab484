"""The MXNet/Gluon "BERT Pre-training and Fine-tuning" tutorial, as an installable package."""
from .model import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier
from .pretrained import get_pretrained_bert, load_hf_checkpoint, load_vocabulary
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__version__ = '0.1.0'

__all__ = [
    'BERTEncoder', 'NSClassifier', 'MLMDecoder', 'BERTClassifier',
    'get_pretrained_bert', 'load_hf_checkpoint', 'load_vocabulary',
    'PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
]
