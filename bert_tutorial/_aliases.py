"""The import paths of 0.5 (``bert_tutorial.finetuning``, ``bert_tutorial.speed.export``, ...), kept for one release.

An old module is a stand-in for the module it moved to: reading a name reads it there (or where that name moved,
``MOVED_NAMES``), and setting one (a test's monkeypatch, a user's override) sets it there, so that it changes what the
package runs.
"""
from __future__ import annotations

import importlib
import sys
import types
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


# names of 0.5's modules that went elsewhere than the rest of their module
MOVED_NAMES = {
    'bert_tutorial.predict': {'classification_report': 'bert_tutorial.recipes.evaluation'},
    'bert_tutorial.finetuning': {'BestParameters': 'bert_tutorial.checkpoint',
                                 'TUTORIAL_WARMUP_STEPS': 'bert_tutorial.tutorial.train'},
}


# where the names a 0.5 module had imported (finetuning's make_trainer, save_checkpoint...) are found when its new
# module no longer holds them: the shared helpers and the tutorial
IMPORTED_FROM = ('bert_tutorial.loop', 'bert_tutorial.checkpoint', 'bert_tutorial.checks', 'bert_tutorial.devices',
                 'bert_tutorial.files', 'bert_tutorial.assets', 'bert_tutorial.vocab', 'bert_tutorial.tutorial.train',
                 'bert_tutorial.tutorial.data')


class Moved(types.ModuleType):
    """Module ``old``, now ``new``: attributes are read from and written to ``new`` (or where ``MOVED_NAMES`` says)."""

    def __init__(self, old: str, new: str):
        super().__init__(old)
        target = vars(self)['_target'] = importlib.import_module(new)
        # for `from old import *`: the public names of the new module (its own and those it imports) and those of the
        # old one that moved apart; the names the old one imported and the new one does not are found by attribute
        public = {n for n in vars(target) if not n.startswith('_')}
        vars(self)['__all__'] = sorted(public | set(MOVED_NAMES.get(old, {})))

    def _home(self, name: str):
        moved = MOVED_NAMES.get(self.__name__, {}).get(name)
        if moved:
            return importlib.import_module(moved)
        target = vars(self)['_target']
        if name.startswith('__') or hasattr(target, name):
            return target
        return next((m for m in map(importlib.import_module, IMPORTED_FROM) if hasattr(m, name)), target)

    def __getattr__(self, name: str):
        return getattr(self._home(name), name)

    def __setattr__(self, name: str, value) -> None:
        # In 0.5 the old module held train_loop and what it calls (evaluate_accuracy, make_trainer...) together, so
        # setting one changed what train_loop ran: set it in every module of the package that holds the same object.
        home = self._home(name)
        old = getattr(home, name, None)
        holders = [m for key, m in list(sys.modules.items()) if key.startswith('bert_tutorial.') and
                   not isinstance(m, Moved) and old is not None and vars(m).get(name) is old]
        for module in {id(m): m for m in [home, *holders]}.values():
            setattr(module, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._home(name), name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(vars(self)['_target'])) | set(MOVED_NAMES.get(self.__name__, {})))


def alias(old: str) -> None:
    """Make module ``old`` (being imported) a stand-in for the module it moved to, with a ``FutureWarning`` saying
    where."""
    new = MOVED[old]
    warnings.warn(f'{old} moved to {new} in bert_tutorial 0.6; the old path goes in 0.7', FutureWarning,
                  stacklevel=3)
    sys.modules[old] = Moved(old, new)
