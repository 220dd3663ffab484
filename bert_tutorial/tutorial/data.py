"""The tutorial's sentiment data transforms: a review -> ``(token_ids, valid_length, segment_ids, label)`` with
GluonNLP's ``BERTSentenceTransform``, batched by the tutorial's ``Tuple(Pad, Stack, Pad, Stack)``."""
from __future__ import annotations

import gluonnlp as nlp
import numpy as np

# The tutorial's classes, in the order of the classifier's outputs.
LABELS = ('negative', 'positive')


class SentimentTransform:
    """``(text, label)`` -> ``(token_ids, valid_length, segment_ids, label)`` with the tutorial's
    ``BERTSentenceTransform(tokenizer, max_len, pad=False, pair=False)``: ``[CLS] text [SEP]``, cut to ``max_len``.

    ``pair=True``: ``(text, text_pair, label)`` -> ``[CLS] text [SEP] text_pair [SEP]``, segment ids 0 then 1 (the
    tutorial's segment embedding at work). ``label``: a class index in ``[0, num_classes)`` (0 when predicting).
    """

    def __init__(self, tokenizer, max_len: int = 128, pair: bool = False, num_classes: int = 2):
        if not isinstance(max_len, int) or max_len < (5 if pair else 3):
            raise ValueError(f'max_len must be an integer >= {5 if pair else 3} ([CLS], a token, [SEP]'
                             f'{", a token, [SEP]" if pair else ""}), got {max_len!r}')
        self.max_len, self.pair, self.num_classes = max_len, pair, num_classes
        self._transform = nlp.data.BERTSentenceTransform(tokenizer, max_len, pad=False, pair=pair)

    def __call__(self, text: str, *rest):
        texts = [text, *rest[:1]] if self.pair else [text]
        label = rest[len(texts) - 1] if len(rest) >= len(texts) else 0
        if len(rest) > len(texts):
            raise ValueError(f'expected (text{", text_pair" if self.pair else ""}[, label]), got {len(rest) + 1} items')
        if len(texts) != (2 if self.pair else 1):
            raise ValueError('a pair transform needs text and text_pair')
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f'text must be a string, got {type(t).__name__}')
        if not isinstance(label, (int, np.integer)) or not 0 <= label < self.num_classes:
            raise ValueError(f'label must be a class index in [0, {self.num_classes}), got {label!r}')
        ids, length, segments = self._transform(texts)
        return ids, length, segments, label


def batchify_fn(padding_id: int):
    """The tutorial's ``Tuple(Pad, Stack, Pad, Stack)``, as float32 arrays.

    Segment ids are padded with 0, not the ``[PAD]`` id as in the tutorial: padded positions are masked by the
    valid length either way, so the tutorial's choice was harmless, but its ``[PAD]`` id (1 in GluonNLP's vocab,
    0 in vocab.txt) is not a segment id in general, and an id >= 2 would index past the 2-row segment embedding.
    """
    b = nlp.data.batchify
    return b.Tuple(b.Pad(axis=0, pad_val=padding_id, dtype='float32'), b.Stack('float32'),
                   b.Pad(axis=0, pad_val=0, dtype='float32'), b.Stack('float32'))
