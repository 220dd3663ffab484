"""Masked-LM and next-sentence examples from text, as the BERT paper makes them.

A corpus is a list of documents, a document a list of sentences. Rules for where documents come from:
- a text file: one document per paragraph (paragraphs are separated by blank lines);
- a folder: one document per ``*.txt`` file in it (recursively);
- the built-in corpus: one document per movie of the Rotten Tomatoes snippets (all its snippets, in order);
- WikiText-2 (through d2l's reader): one document per paragraph of ``wiki.train.tokens``.
Sentences are cut after ``.``, ``!`` or ``?`` followed by white space.

This module knows nothing of models.
"""
from __future__ import annotations

import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import gluonnlp as nlp
import numpy as np
from mxnet import gluon

from ..assets import mxnet_home, reachable
from ..vocab import SPECIAL_TOKENS

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: cut after ``.``, ``!`` or ``?`` followed by white space; empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def movie_review_documents() -> list[list[str]]:
    """The built-in corpus: one document per movie, its snippets' sentences in corpus order."""
    from .sentiment_data import read_rotten_tomatoes

    by_movie: dict[str, list[str]] = defaultdict(list)
    for row in read_rotten_tomatoes():
        by_movie[row['movie_name']].extend(split_sentences(row['text']))
    return [by_movie[m] for m in sorted(by_movie) if by_movie[m]]


def _read(path: Path, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f'corpus file {path} is not {encoding}: {err.reason} at byte offset {err.start}; give its '
                         'encoding (encoding=..., --encoding)') from None
    except LookupError as err:
        raise ValueError(f'encoding: {err}') from None


def read_text_corpus(path: str | os.PathLike, encoding: str = 'utf-8') -> list[list[str]]:
    """Documents from a text file (one per paragraph) or a folder (one per ``*.txt`` file), decoded with
    ``encoding`` (text that is not valid in it is refused, naming the file and the byte offset)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob('*.txt'))
        if not files:
            raise FileNotFoundError(f'corpus folder {path} holds no *.txt files')
        docs = [split_sentences(' '.join(_read(f, encoding).split())) for f in files]
    elif path.is_file():
        text = _read(path, encoding)
        docs = [split_sentences(' '.join(p.split())) for p in re.split(r'\n\s*\n', text)]
    else:
        raise FileNotFoundError(f'corpus {path} does not exist (expected a text file or a folder of *.txt files)')
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f'corpus {path} holds no text')
    return docs


def load_wikitext2(root: str | os.PathLike | None = None) -> list[list[str]]:
    """WikiText-2's training paragraphs through d2l's reader (``root``: a folder with ``wiki.train.tokens``;
    default: d2l's download, cached under ``$MXNET_HOME/datasets/wikitext-2``)."""
    from d2l import mxnet as d2l

    folder = Path(root) if root else mxnet_home() / 'datasets' / 'wikitext-2'
    if not (folder / 'wiki.train.tokens').is_file():
        url = d2l.DATA_HUB['wikitext-2'][0]
        if root or not reachable(d2l.DATA_URL):
            raise FileNotFoundError(f'WikiText-2 is not in {folder} and {url} is unreachable: download that zip '
                                    f'elsewhere and unpack it so that {folder}/wiki.train.tokens exists')
        folder = Path(d2l.download_extract('wikitext-2', str(folder.parent / 'wikitext-2-zip')))
    paragraphs = d2l._read_wiki(str(folder))  # the reader of d2l's BERT chapter
    return [[s for s in p if s.strip()] for p in paragraphs]


def tokenize_documents(tokenizer, vocab, documents: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Token ids of every sentence; empty sentences are dropped, documents without sentences too."""
    out = []
    for doc in documents:
        ids = [vocab[tokenizer(sent)] for sent in doc]
        ids = [s for s in ids if s]
        if ids:
            out.append(ids)
    return out


def split_documents(docs: Sequence, eval_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Held-out documents for evaluation: a seeded ``eval_fraction`` of them (at least one)."""
    if len(docs) < 2:
        raise ValueError(f'need at least 2 documents to hold some out, got {len(docs)}')
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(docs) * eval_fraction))
    held = set(order[:n_eval])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


class PretrainingDataset(gluon.data.Dataset):
    """Next-sentence pairs with masked tokens, re-drawn for each seed (``resample``).

    Each item: ``token_ids (max_len,)``, ``segments (max_len,)``, ``valid_len ()``, ``pred_positions (num_pred,)``,
    ``pred_weights (num_pred,)`` (0 for padded slots), ``pred_labels (num_pred,)``, ``nsp_label ()`` (1 = true next).
    """

    def __init__(self, docs: list[list[list[int]]], vocab: nlp.vocab.BERTVocab, max_len: int = 64,
                 mask_prob: float = 0.15, seed: int = 0):
        if max_len < 5:
            raise ValueError(f'max_len must be >= 5 ([CLS] a [SEP] b [SEP]), got {max_len}')
        if len(docs) < 2:
            raise ValueError(f'docs: next-sentence pairs need at least 2 documents, got {len(docs)}')
        if not any(len(d) >= 2 for d in docs):
            raise ValueError('docs: no document has two sentences, so there is no true next sentence')
        self.docs, self.vocab, self.max_len, self.mask_prob = docs, vocab, max_len, mask_prob
        self.num_pred = max(1, round(max_len * mask_prob))
        self.cls, self.sep, self.mask, self.pad = (vocab[t] for t in ('[CLS]', '[SEP]', '[MASK]', '[PAD]'))
        specials = {vocab[t] for t in SPECIAL_TOKENS}
        self._random_ids = np.array([i for i in range(len(vocab)) if i not in specials])
        self.resample(seed)

    def resample(self, seed: int) -> None:
        """Draw new pairs and masks: the same ``seed`` gives the same examples."""
        rng = random.Random(seed)
        self.examples = []
        for d, doc in enumerate(self.docs):
            for i in range(len(doc) - 1):
                if rng.random() < 0.5:
                    a, b, is_next = doc[i], doc[i + 1], 1
                else:
                    other = rng.randrange(len(self.docs) - 1)
                    other += other >= d  # any document but this one
                    a, b, is_next = doc[i], rng.choice(self.docs[other]), 0
                self.examples.append(self._example(a, b, is_next, rng))

    def _example(self, a: list[int], b: list[int], is_next: int, rng: random.Random):
        a, b = list(a), list(b)
        while len(a) + len(b) > self.max_len - 3:  # cut the longer segment's tail, as BERT does
            (a if len(a) > len(b) else b).pop()
        tokens = [self.cls, *a, self.sep, *b, self.sep]
        segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        candidates = [i for i, t in enumerate(tokens) if t not in (self.cls, self.sep)]
        n = min(self.num_pred, max(1, round(len(candidates) * self.mask_prob)))
        positions = sorted(rng.sample(candidates, n))
        labels = [tokens[p] for p in positions]
        for p in positions:
            r = rng.random()
            if r < 0.8:
                tokens[p] = self.mask
            elif r < 0.9:
                tokens[p] = int(self._random_ids[rng.randrange(len(self._random_ids))])
            # else: keep the token
        valid_len = len(tokens)
        pad = self.max_len - valid_len
        fill = self.num_pred - n
        return (np.array(tokens + [self.pad] * pad, dtype=np.float32),
                np.array(segments + [0] * pad, dtype=np.float32), np.float32(valid_len),
                np.array(positions + [0] * fill, dtype=np.float32),
                np.array([1.0] * n + [0.0] * fill, dtype=np.float32),
                np.array(labels + [0] * fill, dtype=np.float32), np.float32(is_next))

    def __getitem__(self, idx: int):
        return self.examples[idx]

    def __len__(self) -> int:
        return len(self.examples)


def pretraining_loader(dataset: PretrainingDataset, batch_size: int, shuffle: bool, drop_last: bool = False,
                       num_workers: int = 0) -> gluon.data.DataLoader:
    """Batches of the dataset's seven fields, each stacked along a new first axis (``drop_last``: drop a short
    last batch, so a hybridized model with ``static_shape`` sees one shape)."""
    batchify = nlp.data.batchify.Tuple(*[nlp.data.batchify.Stack('float32')] * 7)
    return gluon.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, batchify_fn=batchify,
                                 num_workers=num_workers,
                                 last_batch='discard' if drop_last else 'keep')
