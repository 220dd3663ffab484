"""Sentiment prediction with a fine-tuned ``BERTClassifier``, and saving/loading it as a directory."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import nd

from .data import LABELS, SentimentTransform, batchify_fn
from .model import BERTClassifier

MODEL_FILES = ('config.json', 'vocab.json', 'model.params')


def _check_sentence(sentence, name: str = 'sentence') -> str:
    if not isinstance(sentence, str):
        raise ValueError(f'{name} must be a string, got {type(sentence).__name__}')
    if not sentence.strip():
        raise ValueError(f'{name} is empty: give some text to classify')
    return sentence


def predict_sentiments(net, ctx, vocabulary, tokenizer, sentences: Sequence[str], max_len: int = 128,
                       batch_size: int = 32, sort_by_length: bool = True) -> list[tuple[str, float]]:
    """``(label, probability of that label)`` for each sentence, in the order given; texts longer than ``max_len``
    word pieces are cut, as in training.

    ``sort_by_length``: batch sentences of similar length together, so each batch is padded to a length close to
    its own (the scores are the same up to float rounding; padded positions are masked either way).
    ``net`` is a ``BERTClassifier`` or any block with its inputs, e.g. an exported or quantized ``SymbolBlock``.
    """
    if isinstance(sentences, str):
        raise ValueError('sentences must be a list of strings; use predict_sentiment for one sentence')
    sentences = [_check_sentence(s, f'sentences[{i}]') for i, s in enumerate(sentences)]
    ctx = ctx[0] if isinstance(ctx, (list, tuple)) else ctx
    results: list[tuple[str, float]] = [('', 0.0)] * len(sentences)
    for rows, (ids, segments, valid_len) in sentence_batches(sentences, tokenizer, vocabulary, max_len, batch_size,
                                                             sort_by_length):
        probs = nd.softmax(net(ids.as_in_context(ctx), segments.as_in_context(ctx), valid_len.as_in_context(ctx)))
        for i, row in zip(rows, probs.asnumpy()):
            results[i] = (LABELS[int(row.argmax())], float(row.max()))
    return results


def sentence_batches(sentences: Sequence[str], tokenizer, vocabulary, max_len: int = 128, batch_size: int = 32,
                     sort_by_length: bool = True) -> list[tuple[list[int], tuple[nd.NDArray, nd.NDArray, nd.NDArray]]]:
    """``(rows, (token_ids, segment_ids, valid_length))`` batches of ``sentences`` on the CPU; ``rows`` are the
    batch's indices into ``sentences``. With ``sort_by_length``, each batch holds sentences of similar length."""
    transform = SentimentTransform(tokenizer, max_len)
    batchify = batchify_fn(vocabulary[vocabulary.padding_token])
    samples = [transform(s) for s in sentences]
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


def save_classifier(net: BERTClassifier, vocabulary, model_dir: str | os.PathLike, config: dict) -> Path:
    """Write ``model.params``, ``vocab.json`` and ``config.json`` (``config`` must say how to rebuild ``net.bert``:
    key ``bert`` from ``pretrained.describe_bert``, plus ``max_len``) into ``model_dir``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if 'bert' not in config or 'max_len' not in config:
        raise ValueError("config must hold 'bert' (the base model's sizes) and 'max_len'")
    config = dict(config, num_classes=net.classifier._units, labels=list(LABELS), pooling=net.pooling,
                  dropout=net.dropout._rate if net.dropout is not None else 0.0)
    for name, text in (('config.json', json.dumps(config, indent=2)), ('vocab.json', vocabulary.to_json())):
        tmp = model_dir / f'{name}.part'
        tmp.write_text(text)
        os.replace(tmp, model_dir / name)
    net.save_parameters(str(model_dir / 'model.params.part'))
    os.replace(model_dir / 'model.params.part', model_dir / 'model.params')
    return model_dir


def load_classifier(model_dir: str | os.PathLike, ctx=None) -> tuple[BERTClassifier, nlp.vocab.BERTVocab, dict]:
    """``(net, vocabulary, config)`` from a directory written by ``save_classifier`` (no download needed)."""
    from .pretrained import build_bert

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f'model_dir {model_dir} does not exist; fine-tune first: '
                                f'python -m bert_tutorial finetune --out {model_dir}')
    missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f'model_dir {model_dir} is incomplete: {", ".join(missing)} missing '
                                f'(expected {", ".join(MODEL_FILES)})')
    ctx = ctx or mx.cpu()
    config = json.loads((model_dir / 'config.json').read_text())
    vocabulary = nlp.vocab.BERTVocab.from_json((model_dir / 'vocab.json').read_text())
    if config['bert'].get('model_type') == 'tutorial':
        from .pretraining import build_pretrained_encoder
        bert = build_pretrained_encoder(config['bert'], ctx=ctx)
    else:
        bert = build_bert(config['bert'], dropout=0.0, ctx=ctx)
    net = BERTClassifier(bert, config['num_classes'], dropout=config.get('dropout', 0.0),
                         pooling=config.get('pooling', 'cls'))
    net.load_parameters(str(model_dir / 'model.params'), ctx=ctx)
    return net, vocabulary, config
