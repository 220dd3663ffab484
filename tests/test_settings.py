"""Every setting has one source, its config field's metadata (``checks.option``): the command line, ``--help``, the
checks and what a resume compares are all made from it."""
import argparse
import dataclasses
import warnings

import pytest
from conftest import run_cli

from bert_tutorial import FinetuneConfig, PretrainConfig
from bert_tutorial.checkpoint import DATA_KEY
from bert_tutorial.checks import FREE, setting
from bert_tutorial.cli import build_parser

CONFIGS = {'finetune': FinetuneConfig, 'pretrain': PretrainConfig}


def command(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def fields(name: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(CONFIGS[name])}


@pytest.mark.parametrize('name', CONFIGS)
def test_every_field_has_one_visible_flag_made_from_its_metadata(name):
    """One flag shown in --help for each field, spelled as the metadata says (``--name-with-dashes`` unless it names
    its own); hidden flags are the ones the metadata lists (older spellings), and no flag sets anything else."""
    actions = [a for a in command(name)._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert {a.dest for a in actions} == set(fields(name))
    for field in fields(name).values():
        meta = field.metadata
        mine = [a for a in actions if a.dest == field.name]
        shown = [s for a in mine if a.help != argparse.SUPPRESS for s in a.option_strings]
        hidden = [s for a in mine if a.help == argparse.SUPPRESS for s in a.option_strings]
        assert sorted(hidden) == sorted(meta['hidden']), field.name
        if meta['flags']:
            assert shown == list(meta['flags']), field.name
        elif meta['hidden']:
            assert shown == [] and meta['deprecated'], f'{field.name}: only hidden flags, and not deprecated'
        else:
            flag = '--' + field.name.replace('_', '-')
            assert shown == ([flag, '--no-' + flag[2:]] if isinstance(field.default, bool) else [flag]), field.name
        assert meta['help'].strip() and all(a.default == field.default for a in mine), field.name


@pytest.mark.parametrize('name', CONFIGS)
def test_help_shows_each_default_and_each_help_text(name):
    """Each field's line in --help: its help text, and its default (the config's) unless the flag is a switch."""
    parser = command(name)
    formatter = parser._get_formatter()
    lines = {a.dest: ' '.join(formatter._format_action(a).split()) for a in parser._actions
             if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)}
    page = ' '.join(parser.format_help().split())
    assert page.count('(default: ') == sum('(default: ' in line for line in lines.values())
    for field in fields(name).values():
        if field.name not in lines:  # only hidden flags
            assert field.metadata['deprecated'], field.name
            continue
        assert ' '.join(field.metadata['help'].split()) in lines[field.name], field.name
        if not field.metadata['flags'] and isinstance(field.default, bool):  # a pair: --fast/--no-fast
            flag = field.name.replace('_', '-')
            assert f'(default: --{"" if field.default else "no-"}{flag})' in lines[field.name], lines[field.name]
            continue
        takes_a_value = not field.metadata['flags'] and not isinstance(field.default, bool)
        assert (f'(default: {field.default})' in lines[field.name]) == takes_a_value, lines[field.name]


@pytest.mark.parametrize('name', CONFIGS)
def test_no_arguments_give_the_configs_defaults(name):
    args = build_parser().parse_args([name])
    assert CONFIGS[name](**{f: getattr(args, f) for f in fields(name)}) == CONFIGS[name]()


@pytest.mark.parametrize('name', CONFIGS)
def test_a_rule_from_the_metadata_refuses_a_bad_value_naming_the_flag(name):
    """Every field with a rule (or choices) refuses -1.5, which no rule allows, naming the field and its flag."""
    ruled = [f for f in fields(name).values() if f.metadata['rule']]
    assert len(ruled) >= 10
    for field in ruled:
        assert setting(field.name).endswith(f'(--{field.name.replace("_", "-")})')  # the flag it has
        with pytest.raises(ValueError, match=rf'^{setting(field.name)} must be .*, got -1\.5$'.replace('(', r'\(')
                           .replace(')', r'\)')):
            dataclasses.replace(CONFIGS[name](), **{field.name: -1.5}).check()


def test_the_command_line_refuses_a_bad_value_with_the_flags_name():
    proc = run_cli('finetune', '--lr', '0', '--out', '/nonexistent/never-written', check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: lr (--lr) must be a number from 1.2e-38 to 3.4e38, got 0.0'
    proc = run_cli('pretrain', '--vocab-size', '5', check=False)
    assert proc.returncode == 2 and 'error: vocab_size (--vocab-size) must be an integer >= 6, got 5' in proc.stderr
    proc = run_cli('finetune', '--pooling', 'max', check=False)  # choices: argparse's own error
    assert proc.returncode == 2 and "invalid choice: 'max'" in proc.stderr


@pytest.mark.parametrize('name', CONFIGS)
def test_resume_compares_every_field_but_the_free_ones(name):
    config = CONFIGS[name]()
    free = {f.name for f in fields(name).values() if f.metadata['free']}
    assert all(f.metadata['free'] in (None, *FREE) for f in fields(name).values())
    assert {'out', 'resume', 'progress', 'ctx', 'fast', 'keep_checkpoints'} <= free  # where it writes, how it computes
    assert set(config.run_settings()) == set(fields(name)) - free | {DATA_KEY}
    changed = dataclasses.replace(config, **{f: not getattr(config, f) for f in ('resume', 'fast')})
    assert changed.run_settings() == config.run_settings()


def test_hidden_and_deprecated_flags(monkeypatch):
    """Older spellings still work; a deprecated one says so on one line naming --fast/--no-fast, and the config's
    FutureWarning is not shown again."""
    args = build_parser().parse_args(['finetune', '--train-word-embed', '--kernel-dropout', '--no-fast'])
    assert (args.freeze_word_embed, args.kernel_dropout, args.fast) == (False, True, False)
    args = build_parser().parse_args(['finetune', '--no-bucket', '--no-progress', '--freeze-word-embed'])
    assert (args.bucket, args.progress, args.freeze_word_embed, args.hybridize) == (False, False, True, True)

    ran = []

    class Result:
        def summary(self):
            return 'done'

    monkeypatch.setattr('bert_tutorial.commands.finetune.finetune', lambda config: ran.append(config) or Result())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        proc = run_cli('finetune', '--mxnet-dropout', '--native-layer-norm')
    (config,) = ran
    assert (config.kernel_dropout, config.matmul_layer_norm, config.kernel_ops) == (False, False, None)
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all('is deprecated' in line and '--fast/--no-fast' in line for line in lines), lines
    assert lines[0].startswith('warning: --mxnet-dropout ') and lines[1].startswith('warning: --native-layer-norm ')
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert proc.stdout.strip() == 'done'


def test_resume_compares_what_it_compared_in_0_5():
    """Checkpoints written by 0.5 are compared against these keys (a field moving in or out would refuse them)."""
    assert {f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata['free']} == {
        'out', 'resume', 'log_interval', 'progress', 'ctx', 'checkpoint_every', 'num_workers', 'hybridize', 'fast',
        'accept_other_dropout_masks', 'matmul_layer_norm', 'kernel_dropout', 'kernel_ops', 'keep_checkpoints'}
    assert {f.name for f in dataclasses.fields(PretrainConfig) if f.metadata['free']} == {
        'out', 'resume', 'progress', 'ctx', 'fast', 'keep_checkpoints'}
