"""The tutorial itself: its blocks (``transformer``), its four classes (``model``), its data transforms (``data``),
``train_loop`` and ``evaluate_accuracy`` (``train``) and ``predict_sentiment`` (``predict``).

It runs on MXNet's and GluonNLP's operators, and imports nothing of the package but the shared helpers below it
(``checks``, ``loop``, ``checkpoint``, ``devices``): no recipe, no speed plug-in.
"""
from .model import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier
from .predict import predict_sentiment, predict_sentiments
from .train import evaluate_accuracy, train_loop
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN

__all__ = ['PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
           'BERTEncoder', 'NSClassifier', 'MLMDecoder', 'BERTClassifier', 'train_loop', 'evaluate_accuracy',
           'predict_sentiment', 'predict_sentiments']
