"""Export a fine-tuned classifier as a symbol graph + parameters, and load it back with no model code."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import gluon, nd

EXPORT_PREFIX = 'classifier'


def export_classifier(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``classifier-symbol.json``, ``classifier-0000.params``, ``vocab.json`` and ``config.json`` of the
    classifier saved in ``model_dir`` (default ``out_dir``: ``<model_dir>/export``)."""
    from .predict import load_classifier

    net, vocabulary, config = load_classifier(model_dir, ctx=mx.cpu())
    out = Path(out_dir) if out_dir else Path(model_dir) / 'export'
    out.mkdir(parents=True, exist_ok=True)
    net.hybridize(static_alloc=True)
    # One forward pass builds the graph that export writes.
    net(nd.array([[vocabulary['[CLS]'], vocabulary['[SEP]']]]), nd.zeros((1, 2)), nd.array([2]))
    net.export(str(out / EXPORT_PREFIX), epoch=0)
    shutil.copy(Path(model_dir) / 'vocab.json', out / 'vocab.json')
    (out / 'config.json').write_text(json.dumps(dict(config, inputs=['data0', 'data1', 'data2']), indent=2))
    return out


def load_exported(export_dir: str | os.PathLike, ctx=None) -> tuple[gluon.SymbolBlock, nlp.vocab.BERTVocab, dict]:
    """``(block, vocabulary, config)``: ``block(token_ids, segment_ids, valid_length)`` gives class scores, like the
    original classifier, through ``gluon.SymbolBlock.imports``."""
    export_dir = Path(export_dir)
    files = [f'{EXPORT_PREFIX}-symbol.json', f'{EXPORT_PREFIX}-0000.params', 'vocab.json', 'config.json']
    missing = [f for f in files if not (export_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f'{export_dir} is not an export: {", ".join(missing)} missing '
                                '(make one with python -m bert_tutorial export --model-dir DIR)')
    config = json.loads((export_dir / 'config.json').read_text())
    block = gluon.SymbolBlock.imports(str(export_dir / files[0]), config['inputs'], str(export_dir / files[1]),
                                      ctx=ctx or mx.cpu())
    vocabulary = nlp.vocab.BERTVocab.from_json((export_dir / 'vocab.json').read_text())
    return block, vocabulary, config
