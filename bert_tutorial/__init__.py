"""The MXNet/Gluon "BERT Pre-training and Fine-tuning" tutorial, as an installable package."""
from .encoders import GluonBERT, TutorialBERT, build_encoder
from .finetuning import FinetuneConfig, FinetuneResult, build_classifier, evaluate_accuracy, finetune, train_loop
from .hub import get_pretrained_bert, load_hf_checkpoint, load_model, save_model
from .loop import seed_everything
from .model import BERTClassifier, BERTEncoder, MLMDecoder, NSClassifier
from .predict import predict_sentiment, predict_sentiments
from .pretraining import BERTPretrainModel, PretrainConfig, PretrainResult, pretrain, pretrain_loop
from .speed import FusedBERTAdam, MatmulLayerNorm, use_matmul_layer_norm
from .transformer import AddNorm, EncoderBlock, MultiHeadAttention, PositionalEncoding, PositionWiseFFN
from .vocab import load_vocabulary

__version__ = '0.5.0'

__all__ = [
    # the tutorial
    'PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
    'BERTEncoder', 'NSClassifier', 'MLMDecoder', 'BERTClassifier', 'train_loop', 'predict_sentiment',
    # recipes
    'FinetuneConfig', 'FinetuneResult', 'finetune', 'build_classifier', 'evaluate_accuracy', 'predict_sentiments',
    'PretrainConfig', 'PretrainResult', 'pretrain', 'pretrain_loop', 'BERTPretrainModel', 'seed_everything',
    # pre-trained models and the save format
    'get_pretrained_bert', 'load_hf_checkpoint', 'load_vocabulary', 'GluonBERT', 'TutorialBERT', 'build_encoder',
    'save_model', 'load_model',
    # speed
    'MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam',
]
