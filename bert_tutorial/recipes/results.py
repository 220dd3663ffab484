"""What a recipe (``finetune``, ``pretrain``) returns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gluonnlp as nlp


@dataclass
class RunResult:
    """The trained model and its vocabulary, the history records, the ``metrics`` (also in ``out/metrics.json``) and
    the output folder. ``finished_before``: ``resume`` found the run already finished in ``out`` and trained nothing;
    ``model`` and ``vocabulary`` are then ``None`` (``load_model(out)`` loads what was saved) and the rest is read
    from ``metrics.json``."""

    model: Any
    vocabulary: nlp.vocab.BERTVocab | None
    history: list[dict]
    metrics: dict
    out: Path
    finished_before: bool = False

    def summary(self) -> str:
        """The line the command prints at the end: ``result_line``, saying so when nothing was left to do."""
        if self.finished_before:
            return f'this run had finished, nothing to resume (trained nothing, changed nothing): {self.result_line()}'
        return self.result_line()

    def result_line(self) -> str:
        raise NotImplementedError
