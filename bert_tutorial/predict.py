"""Moved to ``bert_tutorial.tutorial.predict`` in 0.6 (this path is an alias of it until 0.7)."""
from ._aliases import alias

alias(__name__)
