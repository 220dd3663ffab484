"""Export a fine-tuned classifier as a symbol graph + parameters, and load it back with no model code."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import gluon, nd

EXPORT_PREFIX = 'classifier'
INPUTS = ('data0', 'data1', 'data2')  # token ids, segment ids, valid lengths


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


def _graph(block: gluon.HybridBlock, inputs: Sequence[str]) -> tuple[mx.sym.Symbol, dict, dict]:
    """``(symbol, arg_params, aux_params)`` of a classifier block (a ``BERTClassifier`` or a ``SymbolBlock``)."""
    sym = block(*[mx.sym.var(name) for name in inputs])
    params = {p.name: p.data(mx.cpu()) for p in block.collect_params().values() if p.name in set(sym.list_inputs())}
    aux = set(sym.list_auxiliary_states())
    return sym, {k: v for k, v in params.items() if k not in aux}, {k: v for k, v in params.items() if k in aux}


def _symbol_block(sym: mx.sym.Symbol, args: dict, auxs: dict, inputs: Sequence[str]) -> gluon.SymbolBlock:
    block = gluon.SymbolBlock(sym, [mx.sym.var(name) for name in inputs])
    params = {f'arg:{k}': v for k, v in args.items()}
    params.update({f'aux:{k}': v for k, v in auxs.items()})
    block.collect_params().load_dict(params, ctx=mx.cpu(), cast_dtype=True, dtype_source='saved')
    block.hybridize(static_alloc=True)
    return block


def fuse_classifier(block: gluon.HybridBlock, inputs: Sequence[str] = INPUTS) -> gluon.SymbolBlock:
    """The classifier's graph with oneDNN (MKLDNN) operator fusion (dense + GELU, attention matmuls), for CPU
    inference; float32, scores equal up to float rounding."""
    sym, args, auxs = _graph(block, inputs)
    return _symbol_block(sym.get_backend_symbol('MKLDNN'), args, auxs, inputs)


def quantize_classifier(block: gluon.HybridBlock, calib_batches: Iterable[Sequence[nd.NDArray]],
                        calib_mode: str = 'naive', exclude_layers: Sequence[str] = (),
                        granularity: str = 'channel-wise', inputs: Sequence[str] = INPUTS) -> gluon.SymbolBlock:
    """An INT8 version of a classifier for CPU inference: dense layers and attention matmuls run in oneDNN INT8,
    with activation ranges calibrated on ``calib_batches`` (``(token_ids, segment_ids, valid_length)`` tuples of
    representative inputs, e.g. a few hundred training sentences; any shapes).

    ``calib_mode``: ``'naive'`` (min/max of the observed values) or ``'entropy'`` (KL-divergence thresholds).
    ``exclude_layers``: names of layers of the fused graph to keep in float32 (see ``int8_layers``).
    ``granularity``: weight scales per output channel (``'channel-wise'``) or per layer (``'tensor-wise'``).
    The output is a ``SymbolBlock`` with the same inputs.
    """
    from mxnet.contrib import quantization

    if calib_mode not in ('naive', 'entropy'):
        raise ValueError(f"calib_mode must be 'naive' or 'entropy', got {calib_mode!r}")
    sym, args, auxs = _graph(block, inputs)
    sym = sym.get_backend_symbol('MKLDNN_QUANTIZE')
    qsym, _, _, collector = quantization.quantize_graph(
        sym, args, auxs, ctx=mx.cpu(), excluded_sym_names=list(exclude_layers), excluded_op_names=[],
        calib_mode=calib_mode, quantized_dtype='auto', quantize_mode='smart', quantize_granularity=granularity)
    seen = 0
    for batch in calib_batches:  # the float32 graph, observed layer by layer
        if len(batch) != len(inputs):
            raise ValueError(f'each calibration batch must hold {len(inputs)} arrays ({", ".join(inputs)})')
        feed = {name: x.as_in_context(mx.cpu()) for name, x in zip(inputs, batch)}
        executor = sym.bind(mx.cpu(), dict(args, **feed), aux_states=auxs, grad_req='null')
        executor.set_monitor_callback(collector.collect, monitor_all=True)
        executor.forward(is_train=False)[0].wait_to_read()
        seen += 1
    if not seen:
        raise ValueError('calib_batches is empty: calibration needs representative inputs')
    qsym, qargs, qauxs = quantization.calib_graph(qsym, args, auxs, collector, calib_mode=calib_mode,
                                                  quantized_dtype='auto', logger=None)
    return _symbol_block(qsym.get_backend_symbol('MKLDNN_QUANTIZE'), qargs, qauxs, inputs)


def int8_layers(block: gluon.HybridBlock, inputs: Sequence[str] = INPUTS) -> dict[str, list[str]]:
    """Names of the dense (fully connected) layers of a fused or quantized graph: ``{'int8': [...],
    'float32': [...]}``."""
    sym = block(*[mx.sym.var(name) for name in inputs])
    out: dict[str, list[str]] = {'int8': [], 'float32': []}
    for node in json.loads(sym.tojson())['nodes']:
        if node['op'] in ('FullyConnected', '_sg_mkldnn_fully_connected'):
            quantized = node.get('attrs', {}).get('quantized', 'False') == 'True'
            out['int8' if quantized else 'float32'].append(node['name'])
    return out
