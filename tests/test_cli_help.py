"""``--help`` of every command: every option has a help text and shows its default; a flag says what it switches."""
import argparse

import pytest

from bert_tutorial.cli import build_parser


def commands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize('name', list(commands()))
def test_every_option_shows_its_default_and_every_flag_says_what_it_switches(name):
    parser = commands()[name]
    formatter = parser._get_formatter()
    checked = 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        shown = ' '.join(formatter._format_action(action).split())  # as --help prints it, unwrapped
        assert action.help and action.help.strip(), f'{name} {action.option_strings or action.dest}: no help text'
        if isinstance(action, argparse.BooleanOptionalAction):  # a pair: it names the one that is the default
            default = action.option_strings[0 if action.default else 1]
            assert f'(default: {default})' in shown, shown
        elif action.nargs == 0:  # a flag: its help says what it switches; a default would read backwards
            assert '(default:' not in shown, shown
        elif action.required or (not action.option_strings and action.default is None):
            assert '(default:' not in shown, shown  # nothing to default to
        else:
            assert f'(default: {action.default})' in shown, f'{name} --help does not show the default: {shown}'
        checked += 1
    assert checked >= 1
    # and the whole page renders (a help text with a stray % would raise here)
    assert parser.format_help().startswith(f'usage: python -m bert_tutorial {name}')


def test_the_defaults_shown_are_the_configs():
    """The finetune page shows FinetuneConfig's values (the flags map onto its fields)."""
    from bert_tutorial import FinetuneConfig
    shown = ' '.join(commands()['finetune'].format_help().split())
    config = FinetuneConfig()
    for flag, field in (('--epochs EPOCHS', 'epochs'), ('--lr LR', 'lr'), ('--batch-size BATCH_SIZE', 'batch_size'),
                        ('--seed SEED', 'seed'), ('--out OUT', 'out')):
        assert flag in shown and f'(default: {getattr(config, field)})' in shown
    assert f'(default: {config.ctx})' in shown
