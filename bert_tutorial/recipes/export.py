"""Export a fine-tuned classifier (symbol graph + parameters); oneDNN fusion and calibrated INT8 for CPU inference."""
from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from ..files import WriteError, check_output
from ..speed.kernel_ops import standard_ops
from ..speed.kernels import library_operators
from ..tutorial.predict import sentence_batches
from .hub import EXPORT_INPUTS, load_model, save_model


def export_classifier(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      int8_calibration: Sequence[str] | None = None, calib_mode: str = 'naive',
                      overwrite: bool = False) -> Path:
    """Export the classifier saved in ``model_dir`` as a symbol graph and its parameters (``save_model``, model type
    ``'exported_classifier'``; default ``out_dir``: ``<model_dir>/export``). ``gluon.SymbolBlock.imports`` loads it
    without any package code (``hub.load_model`` does that).

    ``int8_calibration``: representative sentences (a few hundred training sentences); the graph written is then
    the INT8 one of ``quantize_classifier``, calibrated on them (CPU only).

    ``out_dir`` must be a new or empty folder, or (with ``overwrite``, or the default) an earlier export; never
    ``model_dir`` or a folder inside another model (``ValueError``, before any work).
    """
    default = Path(model_dir) / 'export'
    out = check_output(out_dir or default, 'out_dir', inputs=[model_dir], overwrite=overwrite, folder=True,
                       default=default)
    # A freshly loaded classifier: MXNet's LayerNorm and Dropout, never the package's kernels (see _graph).
    net, vocabulary, config = load_model(model_dir, ctx=mx.cpu(), model_type='classifier')
    net.hybridize(static_alloc=True)
    # One forward pass builds the graph that export writes.
    net(nd.array([[vocabulary['[CLS]'], vocabulary['[SEP]']]]), nd.zeros((1, 2)), nd.array([2]))
    config = dict(config, model_type='exported_classifier', inputs=list(EXPORT_INPUTS))
    if int8_calibration is not None:
        tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
        batches = [batch for _, batch in sentence_batches(int8_calibration, tokenizer, vocabulary, config['max_len'])]
        net = quantize_classifier(net, batches, calib_mode=calib_mode)
        config['int8'] = {'calib_mode': calib_mode, 'calib_sentences': len(int8_calibration),
                          'int8_dense_layers': len(int8_layers(net)['int8'])}
    fresh = not out.exists() or not any(out.iterdir())
    try:
        return save_model(out, net, vocabulary, config)
    except WriteError:  # a full disk: leave a new folder as it was, not half an export that blocks the next try
        if fresh:
            for path in out.iterdir():
                path.unlink()
        raise


def _graph(block: gluon.HybridBlock, inputs: Sequence[str]) -> tuple[mx.sym.Symbol, dict, dict]:
    """``(symbol, arg_params, aux_params)`` of a classifier block (a ``BERTClassifier`` or a ``SymbolBlock``), in
    MXNet's own operators (the package's C++ kernels swapped back): the graph loads without the kernel library."""
    with standard_ops(block):
        sym = block(*[mx.sym.var(name) for name in inputs])
    library_ops = library_operators(json.loads(sym.tojson()))
    if library_ops:  # e.g. a SymbolBlock imported from a graph that has them
        raise ValueError(f'block: its graph uses operators of the kernel library ({", ".join(library_ops)})')
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


def _signature(nodes: list, index: int, memo: dict) -> tuple:
    """What a node computes: its op, attributes and inputs' signatures, down to the graph's variables."""
    if index not in memo:
        node = nodes[index]
        if node['op'] == 'null':
            memo[index] = ('null', node['name'])
        else:
            memo[index] = (node['op'], tuple(sorted(node.get('attrs', {}).items())),
                           tuple((_signature(nodes, i, memo), k) for i, k, _ in node['inputs']))
    return memo[index]


MASK_TAG = '_lenmask'  # in the names of the nodes softmax_without_length adds


def softmax_without_length(sym: mx.sym.Symbol) -> mx.sym.Symbol:
    """The graph with every ``softmax(scores, length, use_length=True)`` (GluonNLP's self-attention) replaced by
    ``softmax(scores + bias)``, where ``bias`` is 0 at the first ``length`` positions and -1e4 after them.

    Same output (masked positions get exactly 0 either way), but MXNet's length-aware softmax is a slow generic
    kernel on CPU (45 ms for 32 x 12 heads x 96 x 96 here, against 2.4 ms without ``length``). Layers whose
    lengths are computed the same way share one bias.
    """
    graph = json.loads(sym.tojson())
    old, nodes, remap, bias_of, memo = graph['nodes'], [], {}, {}, {}

    def add(op: str, name: str, inputs: list, **attrs) -> list:
        nodes.append({'op': op, 'name': name, 'attrs': {k: str(v) for k, v in attrs.items()}, 'inputs': inputs})
        return [len(nodes) - 1, 0, 0]

    for i, node in enumerate(old):
        node = dict(node, inputs=[[remap[j], k, v] for j, k, v in node['inputs']])
        attrs = node.get('attrs', {})
        if node['op'] == 'softmax' and attrs.get('use_length') == 'True' and len(node['inputs']) == 2:
            scores, length = node['inputs']
            key = _signature(old, old[i]['inputs'][1][0], memo)
            if key not in bias_of:
                n = f'{node["name"]}{MASK_TAG}'
                lengths = add('Cast', f'{n}_cast', [length], dtype='float32')  # (batch x heads, queries)
                pos = add('Reshape', f'{n}_pos', [add('_contrib_arange_like', f'{n}_arange', [lengths], axis=-1)],
                          shape=(1, 1, -1))  # key positions; as many keys as queries in self-attention
                lengths = add('expand_dims', f'{n}_len', [lengths], axis=-1)
                valid = add('broadcast_lesser', f'{n}_valid', [pos, lengths])
                bias_of[key] = add('_mul_scalar', n, [add('_minus_scalar', f'{n}_m1', [valid], scalar=1)],
                                   scalar=10000)
            masked = add('elemwise_add', f'{node["name"]}{MASK_TAG}_add', [scores, bias_of[key]])
            node = dict(node, attrs={k: v for k, v in attrs.items() if k != 'use_length'}, inputs=[masked])
        nodes.append(node)
        remap[i] = len(nodes) - 1
    graph.update(nodes=nodes, arg_nodes=[i for i, n in enumerate(nodes) if n['op'] == 'null'],
                 heads=[[remap[j], k, v] for j, k, v in graph['heads']])
    graph.pop('node_row_ptr', None)
    return mx.sym.load_json(json.dumps(graph))


def fuse_classifier(block: gluon.HybridBlock, inputs: Sequence[str] = EXPORT_INPUTS) -> gluon.SymbolBlock:
    """The classifier's graph for CPU inference: ``softmax_without_length``, then oneDNN (MKLDNN) operator fusion
    (dense + GELU, attention matmuls); float32, scores equal up to float rounding."""
    sym, args, auxs = _graph(block, inputs)
    return _symbol_block(softmax_without_length(sym).get_backend_symbol('MKLDNN'), args, auxs, inputs)


class _RangeCollector:
    """Per-layer output ranges for calibration: the ``percentile`` and ``100 - percentile`` percentiles of each
    batch's values (min and max at 100), widened over batches. MXNet's monitor callback calls ``collect``."""

    def __init__(self, include_layer: Iterable[str], percentile: float = 100.0):
        self.include_layer = set(include_layer)
        self.percentile = percentile
        self.min_max_dict: dict[str, tuple[float, float]] = {}

    def collect(self, name, handle) -> None:
        from mxnet.base import NDArrayHandle, py_str

        name = py_str(name)
        if name not in self.include_layer:
            return
        x = nd.NDArray(ctypes.cast(handle, NDArrayHandle), writable=False).asnumpy()
        if self.percentile >= 100:
            lo, hi = float(x.min()), float(x.max())
        else:
            lo, hi = (float(v) for v in np.percentile(x, [100 - self.percentile, self.percentile]))
            if lo >= 0 > x.min():  # keep the sign: it decides int8 or uint8, which the graph has fixed
                lo = float(x.min())
        old = self.min_max_dict.get(name, (lo, hi))
        lo, hi = min(old[0], lo), max(old[1], hi)
        if lo == hi == 0:  # e.g. a zero bias: as (0, 0) it would be typed uint8 where the graph expects int8
            lo, hi = -1e-6, 1e-6
        self.min_max_dict[name] = (lo, hi)


def quantize_classifier(block: gluon.HybridBlock, calib_batches: Iterable[Sequence[nd.NDArray]],
                        calib_mode: str = 'naive', percentile: float = 99.99, granularity: str = 'tensor-wise',
                        exclude_layers: Sequence[str] = (), inputs: Sequence[str] = EXPORT_INPUTS) -> gluon.SymbolBlock:
    """An INT8 version of a classifier for CPU inference (after ``softmax_without_length``): dense layers and
    attention matmuls run in oneDNN INT8,
    with activation ranges calibrated on ``calib_batches`` (``(token_ids, segment_ids, valid_length)`` tuples of
    representative inputs, e.g. a few hundred training sentences; any shapes).

    ``calib_mode``: ``'naive'`` (ranges from the observed values: their ``percentile`` and ``100 - percentile``
    percentiles, so that rare outliers, e.g. after GELU, do not coarsen the scale; 100 is min/max) or
    ``'entropy'`` (MXNet's KL-divergence thresholds). ``granularity``: weight scales per layer
    (``'tensor-wise'``, faster here) or per output channel (``'channel-wise'``). ``exclude_layers``: names of layers
    of the fused graph to keep in float32 (see ``int8_layers``). The output is a ``SymbolBlock`` with the same
    inputs.
    """
    from mxnet.contrib import quantization

    if calib_mode not in ('naive', 'entropy'):
        raise ValueError(f"calib_mode must be 'naive' or 'entropy', got {calib_mode!r}")
    if not 50 < percentile <= 100:
        raise ValueError(f'percentile must be in (50, 100], got {percentile}')
    sym, args, auxs = _graph(block, inputs)
    sym = softmax_without_length(sym)
    # The attention mask stays float32 (as an INT8 addition, -1e4 would swamp the scores' scale).
    masking = [n['name'] for n in json.loads(sym.tojson())['nodes'] if MASK_TAG in n['name']]
    sym = sym.get_backend_symbol('MKLDNN_QUANTIZE')
    options = dict(ctx=mx.cpu(), excluded_sym_names=list(exclude_layers) + masking, excluded_op_names=[],
                   quantized_dtype='auto', quantize_mode='smart', quantize_granularity=granularity)
    qsym, _, _, collector = quantization.quantize_graph(sym, args, auxs, calib_mode=calib_mode, **options)
    if calib_mode == 'naive':  # the same layers, with percentile ranges
        collector = _RangeCollector(collector.include_layer, percentile)
        qsym, _, _, _ = quantization.quantize_graph(sym, args, auxs, calib_mode='customize',
                                                    LayerOutputCollector=collector, **options)
    first = None
    for batch in calib_batches:  # the float32 graph, observed layer by layer
        if len(batch) != len(inputs):
            raise ValueError(f'each calibration batch must hold {len(inputs)} arrays ({", ".join(inputs)})')
        feed = {name: x.as_in_context(mx.cpu()) for name, x in zip(inputs, batch)}
        executor = sym.bind(mx.cpu(), dict(args, **feed), aux_states=auxs, grad_req='null')
        executor.set_monitor_callback(collector.collect, monitor_all=True)
        executor.forward(is_train=False)[0].wait_to_read()
        first = first or feed
    if first is None:
        raise ValueError('calib_batches is empty: calibration needs representative inputs')
    qsym, qargs, qauxs = quantization.calib_graph(qsym, args, auxs, collector, quantized_dtype='auto', logger=None,
                                                  calib_mode='customize' if calib_mode == 'naive' else calib_mode)
    block = _symbol_block(qsym.get_backend_symbol('MKLDNN_QUANTIZE'), qargs, qauxs, inputs)
    block(*[first[name] for name in inputs]).wait_to_read()  # builds the graph: ready for block.export
    return block


def int8_layers(block: gluon.HybridBlock, inputs: Sequence[str] = EXPORT_INPUTS) -> dict[str, list[str]]:
    """Names of the dense (fully connected) layers of a fused or quantized graph: ``{'int8': [...],
    'float32': [...]}``."""
    sym = block(*[mx.sym.var(name) for name in inputs])
    out: dict[str, list[str]] = {'int8': [], 'float32': []}
    for node in json.loads(sym.tojson())['nodes']:
        if node['op'] in ('FullyConnected', '_sg_mkldnn_fully_connected'):
            quantized = node.get('attrs', {}).get('quantized', 'False') == 'True'
            out['int8' if quantized else 'float32'].append(node['name'])
    return out
