"""Property-based tests (hypothesis): any text is tokenized, transformed and classified or refused clearly."""
import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from conftest import tiny_bert_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_tutorial import BERTClassifier
from bert_tutorial.recipes.pretraining_data import PretrainingDataset
from bert_tutorial.tutorial.data import SentimentTransform
from bert_tutorial.tutorial.predict import predict_sentiments

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
any_text = st.text(alphabet=st.characters(blacklist_categories=('Cs',)), max_size=300)


@pytest.fixture(scope='module')
def tiny():
    from bert_tutorial import build_encoder
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'good', 'bad', 'movie', '##s', 'the']
    vocab = nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx={t: i for i, t in enumerate(tokens)})
    bert = build_encoder(tiny_bert_config(len(vocab), units=8, hidden_size=16, max_len=32))
    net = BERTClassifier(bert, 2)
    net.classifier.initialize()
    return net, vocab, nlp.data.BERTTokenizer(vocab, lower=True)


@EXAMPLES
@given(text=any_text, max_len=st.integers(3, 32))
def test_any_text_becomes_a_valid_bert_input(tiny, text, max_len):
    _, vocab, tokenizer = tiny
    ids, length, segments, _ = SentimentTransform(tokenizer, max_len)(text)
    assert 2 <= length == len(ids) <= max_len
    assert ids[0] == vocab['[CLS]'] and ids[length - 1] == vocab['[SEP]']
    assert ((0 <= ids) & (ids < len(vocab))).all() and not segments.any()


@EXAMPLES
@given(texts=st.lists(any_text, min_size=1, max_size=4))
def test_predict_gives_a_label_or_a_clear_error(tiny, texts):
    net, vocab, tokenizer = tiny
    if any(not t.strip() for t in texts):
        with pytest.raises(ValueError, match='is empty'):
            predict_sentiments(net, mx.cpu(), vocab, tokenizer, texts, max_len=16)
        return
    if any(not tokenizer(t) for t in texts):  # e.g. control characters alone: nothing to classify
        with pytest.raises(ValueError, match='has no word the tokenizer keeps'):
            predict_sentiments(net, mx.cpu(), vocab, tokenizer, texts, max_len=16)
        return
    results = predict_sentiments(net, mx.cpu(), vocab, tokenizer, texts, max_len=16)
    assert len(results) == len(texts)
    assert all(label in ('positive', 'negative') and 0.5 <= p <= 1 for label, p in results)


@EXAMPLES
@given(bad=st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.binary(), st.lists(st.text())))
def test_non_strings_are_refused(tiny, bad):
    net, vocab, tokenizer = tiny
    with pytest.raises(ValueError):
        predict_sentiments(net, mx.cpu(), vocab, tokenizer, [bad], max_len=16)


def test_very_long_and_odd_text_is_cut_to_max_len(tiny):
    net, vocab, tokenizer = tiny
    long_text = 'good movies ' * 10_000 + '\x00\x07\u200b 🎬 映画 ' * 100
    assert len(long_text) > 100_000
    ids, length, _, _ = SentimentTransform(tokenizer, 16)(long_text)
    assert length == 16
    assert predict_sentiments(net, mx.cpu(), vocab, tokenizer, [long_text], max_len=16)[0][0] in ('positive',
                                                                                                   'negative')


@EXAMPLES
@given(docs=st.lists(st.lists(st.lists(st.integers(5, 9), min_size=1, max_size=12), min_size=1, max_size=5),
                     min_size=2, max_size=6),
       max_len=st.integers(5, 24), seed=st.integers(0, 1000))
def test_example_generator_invariants(tiny, docs, max_len, seed):
    _, vocab, _ = tiny
    if not any(len(d) >= 2 for d in docs):
        with pytest.raises(ValueError, match='no document has two sentences'):
            PretrainingDataset(docs, vocab, max_len, seed=seed)
        return
    ds = PretrainingDataset(docs, vocab, max_len, seed=seed)
    cls, sep, pad = vocab['[CLS]'], vocab['[SEP]'], vocab['[PAD]']
    for tokens, segments, valid_len, positions, weights, labels, is_next in ds:
        v, n = int(valid_len), int(weights.sum())
        assert tokens.shape == (max_len,) and 5 <= v <= max_len and is_next in (0, 1)
        seps = np.flatnonzero(tokens[:v] == sep)
        assert tokens[0] == cls and len(seps) == 2 and seps[1] == v - 1 and (tokens[v:] == pad).all()
        assert (segments[:seps[0] + 1] == 0).all() and (segments[seps[0] + 1:v] == 1).all()
        assert n >= 1 and (weights[:n] == 1).all() and (weights[n:] == 0).all()
        chosen = positions[:n].astype(int)
        assert len(set(chosen)) == n and all(0 < p < v and p not in seps for p in chosen)
        assert all(5 <= label <= 9 for label in labels[:n])
