"""The MXNet/Gluon "BERT Pre-training and Fine-tuning" tutorial, as an installable package."""
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm
from .model import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier
from .predict import load_classifier, predict_sentiment, predict_sentiments, save_classifier
from .pretrained import get_pretrained_bert, load_hf_checkpoint, load_vocabulary
from .training import evaluate_accuracy, train_loop
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__version__ = '0.1.0'

__all__ = [
    'BERTEncoder', 'NSClassifier', 'MLMDecoder', 'BERTClassifier',
    'get_pretrained_bert', 'load_hf_checkpoint', 'load_vocabulary',
    'train_loop', 'evaluate_accuracy', 'predict_sentiment', 'predict_sentiments', 'save_classifier', 'load_classifier',
    'PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
    'MatmulLayerNorm', 'use_matmul_layer_norm',
]
