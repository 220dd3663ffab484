"""The MXNet/Gluon "BERT Pre-training and Fine-tuning" tutorial, as an installable package.

The tutorial's blocks, classes, ``train_loop`` and ``predict_sentiment`` (``bert_tutorial.tutorial``) are imported
here; the recipes (``bert_tutorial.recipes``) and the speed plug-in (``bert_tutorial.speed``) only when one of their
names is first used, so that ``import bert_tutorial`` for the tutorial brings in neither.
"""
from __future__ import annotations

import importlib

from .loop import seed_everything
from .tutorial import (
    AddNorm,
    BERTClassifier,
    BERTEncoder,
    EncoderBlock,
    MLMDecoder,
    MultiHeadAttention,
    NSClassifier,
    PositionalEncoding,
    PositionWiseFFN,
    evaluate_accuracy,
    predict_sentiment,
    predict_sentiments,
    train_loop,
)
from .version import __version__  # noqa: F401 -- the package's version attribute
from .vocab import load_vocabulary

# name -> the module that defines it, imported on first use (PEP 562)
_LAZY = {
    **dict.fromkeys(('FinetuneConfig', 'FinetuneResult', 'finetune', 'build_classifier'),
                    'bert_tutorial.recipes.finetuning'),
    **dict.fromkeys(('PretrainConfig', 'PretrainResult', 'pretrain', 'pretrain_loop', 'BERTPretrainModel'),
                    'bert_tutorial.recipes.pretraining'),
    **dict.fromkeys(('get_pretrained_bert', 'load_hf_checkpoint', 'load_model', 'save_model'),
                    'bert_tutorial.recipes.hub'),
    **dict.fromkeys(('GluonBERT', 'TutorialBERT', 'build_encoder'), 'bert_tutorial.recipes.encoders'),
    **dict.fromkeys(('accelerate', 'MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam'),
                    'bert_tutorial.speed'),
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    # the tutorial
    'PositionalEncoding', 'MultiHeadAttention', 'AddNorm', 'PositionWiseFFN', 'EncoderBlock',
    'BERTEncoder', 'NSClassifier', 'MLMDecoder', 'BERTClassifier', 'train_loop', 'evaluate_accuracy',
    'predict_sentiment', 'predict_sentiments', 'seed_everything', 'load_vocabulary',
    # recipes
    'FinetuneConfig', 'FinetuneResult', 'finetune', 'build_classifier',
    'PretrainConfig', 'PretrainResult', 'pretrain', 'pretrain_loop', 'BERTPretrainModel',
    # pre-trained models and the save format
    'get_pretrained_bert', 'load_hf_checkpoint', 'GluonBERT', 'TutorialBERT', 'build_encoder',
    'save_model', 'load_model',
    # speed
    'accelerate', 'MatmulLayerNorm', 'use_matmul_layer_norm', 'FusedBERTAdam',
]
