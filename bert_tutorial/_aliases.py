"""The import paths of 0.5 (``bert_tutorial.finetuning``, ``bert_tutorial.speed.export``, ...), kept for one release.

Each old module is the new module itself (``sys.modules`` maps the old name onto it), so that code which sets an
attribute through the old path (a test's monkeypatch, a subclass) changes what the package runs.
"""
from __future__ import annotations

import importlib
import sys
import warnings

# old path -> new path; the aliases go in 0.7
MOVED = {
    'bert_tutorial.transformer': 'bert_tutorial.tutorial.transformer',
    'bert_tutorial.model': 'bert_tutorial.tutorial.model',
    'bert_tutorial.predict': 'bert_tutorial.tutorial.predict',
    'bert_tutorial.finetuning': 'bert_tutorial.recipes.finetuning',
    'bert_tutorial.pretraining': 'bert_tutorial.recipes.pretraining',
    'bert_tutorial.sentiment_data': 'bert_tutorial.recipes.sentiment_data',
    'bert_tutorial.pretraining_data': 'bert_tutorial.recipes.pretraining_data',
    'bert_tutorial.encoders': 'bert_tutorial.recipes.encoders',
    'bert_tutorial.hub': 'bert_tutorial.recipes.hub',
    'bert_tutorial.speed.export': 'bert_tutorial.recipes.export',
}


def alias(old: str) -> None:
    """Make module ``old`` (being imported) the module it moved to, with a ``FutureWarning`` saying where."""
    new = MOVED[old]
    warnings.warn(f'{old} moved to {new} in bert_tutorial 0.6; the old path goes in 0.7', FutureWarning,
                  stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
