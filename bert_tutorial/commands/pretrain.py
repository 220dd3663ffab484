"""``python -m bert_tutorial pretrain``: a tiny BERT learns masked LM + next sentence prediction from text.

Its flags are ``PretrainConfig``'s fields (``recipe_parser``: help, choices and defaults from the fields' metadata).
"""
from __future__ import annotations

from ..recipes.pretraining import PretrainConfig, pretrain
from . import recipe_parser


def register(subparsers) -> None:
    recipe_parser(subparsers, 'pretrain', 'pre-train a tiny BERT (masked LM + next sentence) on a corpus',
                  PretrainConfig, pretrain)
