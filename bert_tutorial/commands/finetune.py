"""``python -m bert_tutorial finetune``: the package's sentiment fine-tuning recipe, offline by default.

Its flags are ``FinetuneConfig``'s fields (``recipe_parser``: help, choices and defaults from the fields' metadata).
"""
from __future__ import annotations

from ..recipes.finetuning import FinetuneConfig, finetune
from . import recipe_parser


def register(subparsers) -> None:
    recipe_parser(subparsers, 'finetune', 'fine-tune a pre-trained BERT for sentiment analysis', FinetuneConfig,
                  finetune)
