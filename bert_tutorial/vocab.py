"""BERT vocabularies: a WordPiece ``vocab.txt`` in its own order, or the words of a corpus."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import gluonnlp as nlp

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def load_vocabulary(vocab_txt: str | os.PathLike) -> nlp.vocab.BERTVocab:
    """A ``BERTVocab`` whose ids are the line numbers of ``vocab_txt`` (so id ``i`` is embedding row ``i``)."""
    path = Path(vocab_txt)
    if not path.is_file():
        raise FileNotFoundError(f'vocab_txt: {path} does not exist (expected a WordPiece vocab.txt, one token a line)')
    try:
        tokens = path.read_text(encoding='utf-8').splitlines()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b'\n') + 1
        raise ValueError(f'vocab_txt: {path} is not UTF-8 text (line {line}, byte {err.start}): expected a WordPiece '
                         'vocab.txt, one token a line') from None
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f'vocab_txt: {path} lacks the special tokens {missing}')
    if len(set(tokens)) != len(tokens):
        raise ValueError(f'vocab_txt: {path} lists some tokens twice')
    # An explicit token_to_idx keeps vocab.txt's order: no permutation of embedding rows is needed.
    vocab = nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx={t: i for i, t in enumerate(tokens)})
    assert len(vocab) == len(tokens)
    return vocab


def build_vocab(tokenizer, documents: Sequence[Sequence[str]], min_freq: int = 2,
                max_size: int | None = 20000) -> nlp.vocab.BERTVocab:
    """A word-level ``BERTVocab`` over a corpus of documents (lists of sentences), for a BERT trained from scratch."""
    counter = Counter(tok for doc in documents for sent in doc for tok in tokenizer(sent))
    if not counter:
        raise ValueError('documents hold no tokens')
    return nlp.vocab.BERTVocab(counter, max_size=max_size, min_freq=min_freq)
