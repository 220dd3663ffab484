"""Gluon blocks on the package's C++ operators (``speed.kernels``), swapped into models in place of MXNet's.

At BERT-base's shapes on CPU, MXNet's ``LayerNorm`` (forward + backward) and ``Dropout`` are small kernels that
cost far more than their arithmetic: ``KernelLayerNorm`` and ``KernelDropout`` run one OpenMP pass over rows or
blocks. ``KernelSelfAttentionCell`` is GluonNLP's BERT self-attention on ``bert_softmax`` (MXNet's softmax with
lengths runs a scalar ``expf``), ``bert_selfatt_qk`` and ``bert_selfatt_valatt`` (MXNet's interleaved products loop
over tiny per-head GEMMs) and ``bert_fc``; ``KernelGELU`` runs ``bert_gelu``; ``KernelDense`` runs ``bert_fc``
(OpenBLAS's ``sgemm``: about twice MXNet's oneDNN ``FullyConnected`` on an AMD EPYC, slower on an Intel Xeon with
AMX). ``use_kernels`` puts exactly the kernels it is asked for into a model (parameters shared, names unchanged:
saved files do not change); without the C++ library it falls back to ``MatmulLayerNorm`` and MXNet's operators.
``speed.choice.use_chosen_kernels`` asks it for the ones that are faster on the machine. ``standard_ops`` swaps
MXNet's operators back, for exported graphs that must load without the library.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from gluonnlp.model.bert import DotProductSelfAttentionCell
from gluonnlp.model.block import GELU as GluonNLPGELU
from mxnet.gluon import Block, HybridBlock, nn

from .kernels import dense_available, load_kernels
from .layer_norm import MatmulLayerNorm, use_matmul_layer_norm


class KernelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis on the C++ ``bert_layer_norm`` operator (``load_kernels()`` first).

    Input and output: ``(..., units)``; the parameters (``gamma``, ``beta``) are those of ``nn.LayerNorm``.
    """

    def hybrid_forward(self, F, data, gamma, beta):
        return F.bert_layer_norm(data, gamma, beta, eps=self._epsilon)[0]


class KernelDropout(nn.Dropout):
    """``nn.Dropout`` (no ``axes``) on the C++ ``bert_dropout`` operator: the mask is a hash of the element index
    keyed from MXNet's generator, so ``mx.random.seed`` (``loop.seed_step``) decides it; it is not stored.

    Input and output: any shape. Identity outside ``autograd.train_mode``, as ``nn.Dropout``.
    """

    def hybrid_forward(self, F, x):
        # External operators are not told whether MXNet runs in training mode; MXNet's Dropout is: on a one it
        # returns 0 or 2 when training, exactly 1 otherwise. bert_dropout reads that flag.
        one = F.ones_like(F.slice_axis(F.reshape(x, shape=(-1,)), axis=0, begin=0, end=1))
        return F.bert_dropout(x, F.Dropout(one, p=0.5), p=self._rate)[0]


class KernelGELU(HybridBlock):
    """GELU (erf form), the math of ``nn.GELU`` and GluonNLP's ``GELU()`` (``LeakyReLU(act_type='gelu')``), on the
    C++ ``bert_gelu`` operator. Input and output: any shape."""

    def __init__(self, standard: type = nn.GELU, **kwargs):
        super().__init__(**kwargs)
        self._standard = standard  # the block standard_ops puts back

    def hybrid_forward(self, F, x):
        return F.bert_gelu(x)


class KernelDense(nn.Dense):
    """``nn.Dense`` with ``flatten=False`` and a bias, on the C++ ``bert_fc`` operator: the products run on the
    CBLAS ``sgemm`` of scipy-openblas32's OpenBLAS (faster than MXNet's oneDNN ``FullyConnected`` on some CPUs,
    slower on others: ``speed.choice`` decides per machine). The same parameters; input ``(..., in_units)``, output
    ``(..., units)``."""

    def hybrid_forward(self, F, x, weight, bias=None):
        out = F.bert_fc(x, weight, bias)
        return self.act(out) if self.act is not None else out


class _SelfAttentionProductsOnKernels:
    """``F.contrib`` as GluonNLP's attention cell uses it, except that the interleaved self-attention products run
    on ``bert_selfatt_qk`` and ``bert_selfatt_valatt`` (the same math)."""

    def __init__(self, F):
        self._F = F

    def __getattr__(self, name: str):
        return getattr(self._F.contrib, name)

    def interleaved_matmul_selfatt_qk(self, *args, **kwargs):
        if len(args) == 1 and set(kwargs) == {'heads'}:
            return self._F.bert_selfatt_qk(args[0], heads=kwargs['heads'])
        return self._F.contrib.interleaved_matmul_selfatt_qk(*args, **kwargs)

    def interleaved_matmul_selfatt_valatt(self, *args, **kwargs):
        if len(args) == 2 and set(kwargs) == {'heads'}:
            return self._F.bert_selfatt_valatt(args[0], args[1], heads=kwargs['heads'])
        return self._F.contrib.interleaved_matmul_selfatt_valatt(*args, **kwargs)


class _AttentionOnKernels:
    """``F`` as GluonNLP's attention cell uses it, except that (with ``softmax``) its length-aware softmax over the
    last axis runs on ``bert_softmax``, (with ``products``) ``F.contrib``'s interleaved self-attention products on
    ``bert_selfatt_qk`` and ``bert_selfatt_valatt``, and (with ``dense``) its query/key/value projection on
    ``bert_fc``: the cell's own ``hybrid_forward`` then needs no copy."""

    def __init__(self, F, softmax: bool = True, products: bool = False, dense: bool = False):
        self._F = F
        self._softmax = softmax
        self._dense = dense
        self.contrib = _SelfAttentionProductsOnKernels(F) if products else F.contrib

    def __getattr__(self, name: str):
        return getattr(self._F, name)

    def FullyConnected(self, *args, **kwargs):  # noqa: N802 (MXNet's operator name)
        if self._dense and not args and set(kwargs) <= {'data', 'weight', 'bias', 'num_hidden', 'no_bias', 'flatten'} \
                and kwargs.get('bias') is not None and not kwargs.get('no_bias') and kwargs.get('flatten') is False:
            return self._F.bert_fc(kwargs['data'], kwargs['weight'], kwargs['bias'])
        return self._F.FullyConnected(*args, **kwargs)

    def softmax(self, data, *args, **kwargs):
        if self._softmax and not args and kwargs.get('use_length') and kwargs.get('axis', -1) == -1 and set(
                kwargs) <= {'length', 'use_length', 'axis'}:
            return self._F.bert_softmax(data, kwargs['length'])
        return self._F.softmax(data, *args, **kwargs)


class KernelSelfAttentionCell(DotProductSelfAttentionCell):
    """GluonNLP's ``DotProductSelfAttentionCell`` (BERT's self-attention) with, given ``softmax``, the length-aware
    softmax on the C++ ``bert_softmax`` operator (without lengths it runs MXNet's softmax), given ``attention``, the
    interleaved products (scores and weighted values) on ``bert_selfatt_qk`` and ``bert_selfatt_valatt``, and given
    ``dense``, the query/key/value projection on ``bert_fc``: the same parameters, inputs and outputs."""

    def __init__(self, *args, softmax: bool = True, attention: bool = False, dense: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._kernel_softmax = softmax
        self._kernel_attention = attention
        self._kernel_dense = dense

    def hybrid_forward(self, F, *args, **params):  # the parameters come as keywords
        proxy = _AttentionOnKernels(F, self._kernel_softmax, self._kernel_attention, self._kernel_dense)
        return super().hybrid_forward(proxy, *args, **params)


def _put(parent: Block, name: str, old: Block, new: Block) -> None:
    """Register ``new`` in ``parent`` where ``old`` was, under the same name."""
    parent._children[name] = new
    if parent.__dict__.get(name) is old:
        # Block.__setattr__ refuses a base class in place of a subclass (KernelDropout -> Dropout).
        object.__setattr__(parent, name, new)
    # else: children of a Sequential are registered under their position only


def _swap(block: Block, replace: Callable[[Block], Block | None]) -> list[tuple[Block, str, Block]]:
    """Replace every descendant ``child`` of ``block`` for which ``replace(child)`` is a block; ``(parent, name,
    replaced child)`` of each replacement, outermost first."""
    swapped = []
    for name, child in list(block._children.items()):
        new = replace(child)
        if new is not None:
            _put(block, name, child, new)
            swapped.append((block, name, child))
            child = new  # a new attention cell holds the old one's dropout child: look inside it too
        swapped += _swap(child, replace)
    return swapped


def _clear_graphs(block: Block) -> None:
    """Forget the hybridized graphs of ``block`` and its descendants: graphs of swapped-out children must not run
    again."""
    if isinstance(block, HybridBlock):
        block._clear_cached_op()
    for child in block._children.values():
        _clear_graphs(child)


def _layer_norm_like(child: nn.LayerNorm, cls: type) -> nn.LayerNorm:
    units = child.gamma.shape[0]
    if not units:
        raise ValueError(f'{child.name}: initialize the parameters before swapping its LayerNorm')
    if cls is KernelLayerNorm and 'add' in (child.gamma.grad_req, child.beta.grad_req):
        # External operators are not told to add to a gradient: they would overwrite it.
        raise ValueError(f"{child.name}: grad_req 'add' (gradient accumulation) needs MXNet's LayerNorm")
    new = cls(axis=-1, epsilon=child._epsilon, in_channels=units, prefix=child.prefix, params=child.params)
    assert new.gamma is child.gamma and new.beta is child.beta
    return new


def _attention_like(child: DotProductSelfAttentionCell, cls: type, **options) -> DotProductSelfAttentionCell:
    new = cls(child.units, child._num_heads, dropout=child._dropout, use_bias=child._use_bias, prefix=child.prefix,
              params=child.params, **options)
    _put(new, 'dropout_layer', new.dropout_layer, child.dropout_layer)
    assert all(getattr(new, n) is getattr(child, n) for n in ('query_weight', 'key_weight', 'value_weight'))
    return new


def _dense_like(child: nn.Dense, cls: type) -> nn.Dense:
    if cls is KernelDense and 'add' in (child.weight.grad_req, child.bias.grad_req):
        raise ValueError(f"{child.name}: grad_req 'add' (gradient accumulation) needs MXNet's FullyConnected")
    new = cls(child._units, activation=child.act._act_type if child.act is not None else None, flatten=False,
              in_units=child._in_units, prefix=child.prefix, params=child.params)
    if child.act is not None:
        _put(new, 'act', new.act, child.act)
    assert new.weight is child.weight and new.bias is child.bias
    return new


def _to_kernels(layer_norm: bool, dropout: bool, softmax: bool = False, gelu: bool = False,
                attention: bool = False, dense: bool = False) -> Callable[[Block], Block | None]:
    def replace(child: Block) -> Block | None:
        if (softmax or attention or dense) and type(child) is DotProductSelfAttentionCell and child._use_bias:
            return _attention_like(child, KernelSelfAttentionCell, softmax=softmax, attention=attention, dense=dense)
        if dense and type(child) is nn.Dense and not child._flatten and child.bias is not None:
            return _dense_like(child, KernelDense)
        if gelu and (type(child) is nn.GELU or (type(child) is GluonNLPGELU and not child._approximate)):
            return KernelGELU(type(child), prefix=child.prefix)
        if (layer_norm and type(child) in (nn.LayerNorm, MatmulLayerNorm) and child._axis == -1 and child._center
                and child._scale):
            return _layer_norm_like(child, KernelLayerNorm)
        if dropout and type(child) is nn.Dropout and not child._axes and child._rate > 0:
            return KernelDropout(child._rate, prefix=child.prefix)
        return None
    return replace


def _to_standard(child: Block) -> Block | None:
    if type(child) is KernelSelfAttentionCell:
        return _attention_like(child, DotProductSelfAttentionCell)
    if type(child) is KernelDense:
        return _dense_like(child, nn.Dense)
    if type(child) is KernelGELU:
        return child._standard(prefix=child.prefix)
    if type(child) is KernelLayerNorm:
        return _layer_norm_like(child, nn.LayerNorm)
    if type(child) is KernelDropout:
        return nn.Dropout(child._rate, prefix=child.prefix)
    return None


# the kinds of block use_kernels swaps, as its counts name them
SWAPS = ('layer_norm', 'dropout', 'softmax', 'gelu', 'attention', 'dense')


def use_kernels(block: Block, layer_norm: bool = True, dropout: bool = True, softmax: bool = False,
                gelu: bool = False, attention: bool = False, dense: bool = False) -> dict:
    """Put the C++ kernels into ``block``: with ``layer_norm``, every ``nn.LayerNorm`` (or ``MatmulLayerNorm``)
    over the last axis becomes a ``KernelLayerNorm`` sharing its parameters; with ``dropout``, every
    ``nn.Dropout`` without ``axes`` a ``KernelDropout``; with ``softmax`` or ``attention``, every GluonNLP
    ``DotProductSelfAttentionCell`` (BERT's self-attention) a ``KernelSelfAttentionCell`` whose length-aware
    softmax (``softmax``) and interleaved products (``attention``) run on the kernels; with ``gelu``, every
    ``nn.GELU`` and GluonNLP ``GELU()`` (erf form) a ``KernelGELU``; with ``dense``, every ``nn.Dense`` with
    ``flatten=False`` and a bias a ``KernelDense``, and the self-attention cells' query/key/value projection runs on
    ``bert_fc`` (where the BLAS is there: ``dense_available()``). Without the kernels (``load_kernels()`` is
    ``False``) the layer norms become ``MatmulLayerNorm`` and the rest stays MXNet's; off a CPU nothing changes.

    Call it after the parameters are initialized or loaded. Returns ``{'kernels': bool, 'layer_norm': n,
    'dropout': m, 'softmax': k, 'gelu': g, 'attention': a, 'dense': d}``, the blocks replaced (an attention cell
    counts under ``softmax``, ``attention`` and ``dense`` as they apply). ``KernelDropout``'s masks differ from MXNet's
    ``Dropout``'s (both come from the run's seed): a run is reproducible with the same choice. ``softmax``, ``gelu``,
    ``attention`` and ``dense`` compute MXNet's values up to float32 round-off.
    """
    on_cpu = all(c.device_type == 'cpu' for p in block.collect_params().values() for c in p.list_ctx())
    counts = {'kernels': False, **dict.fromkeys(SWAPS, 0)}
    if not on_cpu:  # the kernels (and MatmulLayerNorm, a CPU work-around) are for CPUs: nothing changes
        return counts
    if not load_kernels():
        return dict(counts, layer_norm=use_matmul_layer_norm(block) if layer_norm else 0)
    dense = dense and dense_available()
    counts['kernels'] = True
    kinds = {KernelLayerNorm: 'layer_norm', KernelDropout: 'dropout', KernelGELU: 'gelu', KernelDense: 'dense'}
    for parent, name, _ in _swap(block, _to_kernels(layer_norm, dropout, softmax, gelu, attention, dense)):
        new = parent._children[name]
        if type(new) is KernelSelfAttentionCell:
            counts['softmax'] += new._kernel_softmax
            counts['attention'] += new._kernel_attention
            counts['dense'] += new._kernel_dense
        else:
            counts[kinds[type(new)]] += 1
    _clear_graphs(block)
    return counts


@contextlib.contextmanager
def standard_ops(block: Block) -> Iterator[Block]:
    """Within the ``with``, ``block`` runs MXNet's operators in place of the kernel blocks (``KernelLayerNorm``,
    ``KernelDropout``, ``KernelSelfAttentionCell`` with its softmax, products and projection, ``KernelGELU``,
    ``KernelDense``; same parameters):
    graphs traced or exported there load without the library."""
    originals = _swap(block, _to_standard)
    _clear_graphs(block)
    try:
        yield block
    finally:
        for parent, name, child in reversed(originals):
            _put(parent, name, parent._children[name], child)
        _clear_graphs(block)
