"""Sentiment prediction with a fine-tuned ``BERTClassifier`` (load one with ``hub.load_model``)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mxnet import nd

from .data import LABELS, SentimentTransform, batchify_fn


def _check_sentence(sentence, name: str = 'sentence') -> str:
    if not isinstance(sentence, str):
        raise ValueError(f'{name} must be a string, got {type(sentence).__name__}')
    if not sentence.strip():
        raise ValueError(f'{name} is empty: give some text to classify')
    return sentence


def predict_sentiments(net, ctx, vocabulary, tokenizer, sentences: Sequence[str], max_len: int = 128,
                       batch_size: int = 32, sort_by_length: bool = True,
                       labels: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """``(label, probability of that label)`` for each sentence (or ``(text, text_pair)`` pair), in the order given;
    texts longer than ``max_len`` word pieces are cut, as in training.

    ``sort_by_length``: batch sentences of similar length together, so each batch is padded to a length close to
    its own (the scores are the same up to float rounding; padded positions are masked either way).
    ``net`` is a ``BERTClassifier`` or any block with its inputs, e.g. an exported or quantized ``SymbolBlock``;
    ``labels``: the names of its classes, in order; by default those of a model ``load_model`` read (its
    ``config['labels']``), else the tutorial's ``('negative', 'positive')``.
    """
    if labels is None:  # a loaded model knows its classes: fresh/rotten must not come out as negative/positive
        labels = getattr(net, 'labels', None) or LABELS
    if isinstance(sentences, str):
        raise ValueError('sentences must be a list of strings; use predict_sentiment for one sentence')
    sentences = [tuple(_check_sentence(t, f'sentences[{i}]') for t in s) if isinstance(s, tuple)
                 else _check_sentence(s, f'sentences[{i}]') for i, s in enumerate(sentences)]
    if len({isinstance(s, tuple) and len(s) for s in sentences}) > 1 or any(
            isinstance(s, tuple) and len(s) != 2 for s in sentences):
        raise ValueError('sentences must be all strings or all (text, text_pair) pairs')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
    positions = model_positions(net)
    if positions is not None and max_len > positions:
        raise ValueError(f'max_len must be at most {positions}, the positions the model has embeddings for, '
                         f'got {max_len}')
    ctx = ctx[0] if isinstance(ctx, (list, tuple)) else ctx
    results: list[tuple[str, float] | None] = [None] * len(sentences)
    for rows, (ids, segments, valid_len) in sentence_batches(sentences, tokenizer, vocabulary, max_len, batch_size,
                                                             sort_by_length):
        probs = nd.softmax(net(ids.as_in_context(ctx), segments.as_in_context(ctx), valid_len.as_in_context(ctx)))
        for i, row in zip(rows, probs.asnumpy()):
            if len(row) != len(labels):
                raise ValueError(f'labels: {len(labels)} names for a model of {len(row)} classes')
            if not np.isfinite(row).all():
                raise ValueError(f'the model\'s scores for sentences[{i}] are not finite (NaN or inf): its parameters '
                                 'are damaged or overflow on this input')
            results[i] = (labels[int(row.argmax())], float(row.max()))
    return results


def model_positions(net) -> int | None:
    """How many positions ``net`` has embeddings for: a ``BERTClassifier``'s ``max_len``, the one ``load_model``
    gives an exported graph, or the rows of a graph's position embedding (``None`` when it has none of these)."""
    positions = getattr(net, 'max_len', None)
    if positions is not None:
        return int(positions)
    for name, param in net.collect_params().items():
        if name.endswith('position_weight'):  # GluonNLP's BERTEncoder, in a SymbolBlock (fused or quantized too)
            shape = param.shape if param.shape and all(param.shape) else param.data().shape
            return int(shape[0])
    return None


def sentence_batches(sentences: Sequence, tokenizer, vocabulary, max_len: int = 128, batch_size: int = 32,
                     sort_by_length: bool = True) -> list[tuple[list[int], tuple[nd.NDArray, nd.NDArray, nd.NDArray]]]:
    """``(rows, (token_ids, segment_ids, valid_length))`` batches of ``sentences`` (strings, or ``(text,
    text_pair)`` pairs) on the CPU; ``rows`` are the batch's indices into ``sentences``. With ``sort_by_length``,
    each batch holds sentences of similar length."""
    pair = bool(sentences) and isinstance(sentences[0], tuple)
    transform = SentimentTransform(tokenizer, max_len, pair=pair)
    batchify = batchify_fn(vocabulary[vocabulary.padding_token])
    samples = [transform(*s) if pair else transform(s) for s in sentences]
    empty = [i for i, sample in enumerate(samples) if int(sample[1]) <= 2]  # [CLS] and [SEP] alone
    if empty:
        raise ValueError(f'sentences[{empty[0]}] has no word the tokenizer keeps ({sentences[empty[0]]!r}): '
                         'there is nothing to classify')
    order = list(range(len(samples)))
    if sort_by_length:
        order.sort(key=lambda i: int(samples[i][1]))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, valid_len, segments, _ = batchify([samples[i] for i in rows])
        batches.append((rows, (ids, segments, valid_len)))
    return batches


def predict_sentiment(net, ctx, vocabulary, tokenizer, sentence: str, max_len: int = 128) -> str:
    """``'positive'`` or ``'negative'``, as the tutorial's ``predict_sentiment``."""
    return predict_sentiments(net, ctx, vocabulary, tokenizer, [_check_sentence(sentence)], max_len)[0][0]
