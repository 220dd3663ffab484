"""0.5's names, kept for one release (they go in 0.7): its import paths (``_aliases.MOVED``), its speed flags and
fields. Each still works and says, with a ``FutureWarning``, what replaces it. (This is the one test module that
imports the old paths: the package, the other tests, the benchmarks and tools use the new ones, see
tests/test_layers.py.)"""
import importlib
import sys
import warnings

import mxnet as mx
import pytest
from conftest import run_cli

from bert_tutorial import _aliases
from bert_tutorial.recipes.finetuning import FinetuneConfig, build_classifier
from bert_tutorial.speed import KernelDropout, KernelLayerNorm, MatmulLayerNorm


@pytest.fixture
def forget_aliases():
    """The alias modules as in a new process (not imported yet); put back as found afterwards."""
    saved = {name: sys.modules.pop(name) for name in _aliases.MOVED if name in sys.modules}
    parents = {}
    for old in _aliases.MOVED:
        parent, _, child = old.rpartition('.')
        module = sys.modules[parent]
        if child in vars(module):
            parents[old] = vars(module)[child]
            delattr(module, child)
    yield
    for old in _aliases.MOVED:
        sys.modules.pop(old, None)
        parent, _, child = old.rpartition('.')
        vars(sys.modules[parent]).pop(child, None)
    sys.modules.update(saved)
    for old, value in parents.items():
        parent, _, child = old.rpartition('.')
        setattr(sys.modules[parent], child, value)


@pytest.mark.parametrize('old', sorted(_aliases.MOVED))
def test_an_old_import_path_stands_in_for_the_new_module_and_warns(forget_aliases, old):
    new = _aliases.MOVED[old]
    with pytest.warns(FutureWarning, match=rf'^{old} moved to {new} in bert_tutorial 0.6; the old path goes in 0.7$'):
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    assert module is sys.modules[old]
    parent, _, child = old.rpartition('.')
    assert getattr(sys.modules[parent], child) is module  # import bert_tutorial.<old> / from ... import <old>
    # every name reads through to the new module, and setting one (a monkeypatch, a user's override) sets it there,
    # so that it changes what the package runs
    names = [n for n in vars(target) if not n.startswith('_')]
    assert names and all(getattr(module, n) is getattr(target, n) for n in names)
    name, marker = names[0], object()
    saved = getattr(target, name)
    try:
        setattr(module, name, marker)
        assert getattr(target, name) is marker
    finally:
        setattr(target, name, saved)


@pytest.mark.parametrize('old, name, home', [(old, name, home) for old, moved in _aliases.MOVED_NAMES.items()
                                             for name, home in moved.items()])
def test_names_that_moved_apart_from_their_module_still_import_from_the_old_path(forget_aliases, old, name, home):
    with pytest.warns(FutureWarning):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(home), name)
    assert name not in vars(importlib.import_module(_aliases.MOVED[old]))  # it really moved: not found by accident


@pytest.mark.parametrize('old, name, home', [
    ('bert_tutorial.finetuning', 'make_trainer', 'bert_tutorial.loop'),
    ('bert_tutorial.finetuning', 'save_checkpoint', 'bert_tutorial.checkpoint'),
    ('bert_tutorial.pretraining', 'check_fresh_start', 'bert_tutorial.checkpoint')])
def test_names_an_old_module_had_imported_are_found_where_they_live(forget_aliases, old, name, home):
    """0.5's ``from bert_tutorial.finetuning import make_trainer`` (a name it imported); setting it there reaches the
    loop that calls it."""
    from bert_tutorial.tutorial import train
    with pytest.warns(FutureWarning):
        module = importlib.import_module(old)
    real = getattr(importlib.import_module(home), name)
    assert getattr(module, name) is real
    if name == 'make_trainer':
        marker = object()
        setattr(module, name, marker)
        try:
            assert train.make_trainer is marker
        finally:
            setattr(module, name, real)
        assert train.make_trainer is real


def test_a_star_import_of_an_old_path_gives_what_0_5_gave(forget_aliases):
    namespace = {}
    with pytest.warns(FutureWarning):
        exec('from bert_tutorial.finetuning import *', namespace)
        exec('from bert_tutorial.predict import *', namespace)
    for name in ('FinetuneConfig', 'finetune', 'build_classifier', 'train_loop', 'evaluate_accuracy', 'BestParameters',
                 'TUTORIAL_WARMUP_STEPS', 'predict_sentiment', 'predict_sentiments', 'classification_report'):
        assert name in namespace, name


def test_setting_a_name_through_an_old_path_changes_what_train_loop_runs(forget_aliases):
    """In 0.5 ``bert_tutorial.finetuning`` held ``train_loop`` and what it calls: replacing ``evaluate_accuracy``
    there changed ``train_loop``; it still does, and putting the old one back restores every module."""
    from bert_tutorial.recipes import finetuning
    from bert_tutorial.tutorial import train
    with pytest.warns(FutureWarning):
        old = importlib.import_module('bert_tutorial.finetuning')
    real, fake = train.evaluate_accuracy, lambda *args: 0.5
    old.evaluate_accuracy = fake
    try:
        assert train.evaluate_accuracy is fake and finetuning.evaluate_accuracy is fake
    finally:
        old.evaluate_accuracy = real
    assert train.evaluate_accuracy is real and finetuning.evaluate_accuracy is real


def test_every_old_path_has_its_alias_module():
    from pathlib import Path
    root = Path(_aliases.__file__).parents[1]
    for old, new in _aliases.MOVED.items():
        alias = root / (old.replace('.', '/') + '.py')
        assert alias.is_file() and 'alias(__name__)' in alias.read_text(), alias
        assert (root / (new.replace('.', '/') + '.py')).is_file(), new


@pytest.mark.parametrize('flag, field', [('--native-layer-norm', 'matmul_layer_norm'),
                                         ('--mxnet-dropout', 'kernel_dropout'), ('--mxnet-ops', 'kernel_ops')])
def test_old_speed_flags_still_parse_and_warn(flag, field):
    """Hidden from ``--help``; each sets its 0.5 field (False), and the config built from them warns. (Refused
    here for another setting, before any work: the warning comes first.)"""
    from bert_tutorial.cli import build_parser
    args = build_parser().parse_args(['finetune', flag])
    assert getattr(args, field) is False and args.fast is True
    assert flag not in build_parser()._subparsers._group_actions[0].choices['finetune'].format_help()
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)  # the command says it once, on its own line, not twice
        proc = run_cli('finetune', flag, '--max-len', '2', check=False)
    assert proc.returncode == 2 and 'max_len (--max-len) must be an integer >= 3, got 2' in proc.stderr
    warning = f'warning: {flag} is deprecated: --fast/--no-fast'
    assert proc.stderr.count(warning) == 1 and proc.stderr.index(warning) < proc.stderr.index('error:')
    with pytest.warns(FutureWarning, match=rf'FinetuneConfig\({field}=False\) is deprecated: fast=True/False'):
        FinetuneConfig(**{field: False})  # in Python, the config warns
    assert build_parser().parse_args(['finetune', '--kernel-dropout']).kernel_dropout is True
    # with --train (the recipe rewrites data=None into the config): still one line, no second warning
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        proc = run_cli('finetune', flag, '--train', 'examples/reviews.csv', '--ctx', 'gpu', check=False)
    assert proc.returncode == 2 and proc.stderr.count('deprecated') == 1, proc.stderr


def _kinds(net) -> set:
    kinds, todo = set(), [net]
    while todo:
        block = todo.pop()
        kinds.add(type(block))
        todo += block._children.values()
    return kinds


def test_old_config_fields_and_build_classifier_switches_warn_and_still_work(tiny_vocab):
    """``FinetuneConfig(kernel_ops=...)`` and ``build_classifier(kernel_dropout=..., ...)`` warn; the classifier is
    accelerated as they say (MXNet's Dropout with ``kernel_dropout=False``, the LayerNorm kernel or
    ``MatmulLayerNorm`` either way); without them ``build_classifier`` runs MXNet's operators alone."""
    from conftest import tiny_bert_config

    from bert_tutorial.recipes.encoders import build_encoder
    from bert_tutorial.speed import load_kernels

    def bert():
        return build_encoder(tiny_bert_config(len(tiny_vocab), dropout=0.1))

    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        FinetuneConfig()  # the new fields alone: no warning
    with pytest.warns(FutureWarning, match='FinetuneConfig'):
        config = FinetuneConfig(kernel_ops=False, kernel_dropout=False)
    assert config.kernel_ops is False and config.fast is True
    with warnings.catch_warnings():
        warnings.simplefilter('error', FutureWarning)
        plain = _kinds(build_classifier(bert(), [mx.cpu()], hybridize=False))
    assert {mx.gluon.nn.LayerNorm, mx.gluon.nn.Dropout} <= plain and not plain & {KernelLayerNorm, MatmulLayerNorm}
    with pytest.warns(FutureWarning, match=r'build_classifier\(kernel_dropout, kernel_ops=...\) is deprecated'):
        kinds = _kinds(build_classifier(bert(), [mx.cpu()], kernel_dropout=False, kernel_ops=False, hybridize=False))
    assert kinds & {KernelLayerNorm, MatmulLayerNorm} and mx.gluon.nn.LayerNorm not in kinds
    assert KernelDropout not in kinds and mx.gluon.nn.Dropout in kinds
    with pytest.warns(FutureWarning):  # the control: the dropout kernel where the kernels load
        kinds = _kinds(build_classifier(bert(), [mx.cpu()], kernel_ops=False, hybridize=False))
    assert (KernelDropout in kinds) is load_kernels()
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['kernels'\\]"):
        build_classifier(bert(), [mx.cpu()], kernels=False)
