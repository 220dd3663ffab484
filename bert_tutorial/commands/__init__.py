"""The commands of ``python -m bert_tutorial``: one module each, with ``register(subparsers)``.

A recipe's command (``finetune``, ``pretrain``) is made from its config: ``add_flags`` reads each field's metadata
(``checks.option``, where the choice of own code over a library is explained) into one argparse flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
import warnings


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (every option has a help text: argparse adds defaults to those alone), except
    for flags, whose help says what they switch (``--no-bucket`` stores False into ``bucket``, whose default, True,
    would read as if not bucketing were the default), required options, and positionals without a default. A flag
    pair (``--fast/--no-fast``) names the one that is the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(action.default, bool):
            default = next(o for o in action.option_strings if o.startswith('--no-') is not action.default)
            return f'{action.help} (default: {default})'
        if action.nargs == 0 or action.required or (not action.option_strings and action.default is None):
            return action.help
        return super()._get_help_string(action)


class DeprecatedFlag(argparse.Action):
    """A hidden flag of an older release: stores ``const`` and says, on one line, what replaces it."""

    def __init__(self, option_strings, dest, const=None, default=None, help=None, replacement=''):
        super().__init__(option_strings, dest, nargs=0, const=const, default=default, help=help)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f'warning: {option_string} is deprecated: {self.replacement}', file=sys.stderr)
        setattr(namespace, self.dest, self.const)


def add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag for each field of ``config_class`` (a dataclass of ``checks.option`` fields), from its metadata:
    ``--name-with-dashes VALUE`` of the field's type and choices, ``--name/--no-name`` for a bool, or the field's
    own ``flags`` (each storing its value) and ``hidden`` ones; all default to the field's default."""
    types_ = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        meta, kind = field.metadata, types_[field.name]
        common = dict(dest=field.name, default=field.default)
        for flag, value in meta['flags'].items():
            parser.add_argument(flag, action='store_const', const=value, help=meta['help'], **common)
        for flag, value in meta['hidden'].items():
            action = dict(action=DeprecatedFlag, replacement=meta['deprecated']) if meta['deprecated'] else \
                dict(action='store_const')
            parser.add_argument(flag, const=value, help=argparse.SUPPRESS, **action, **common)
        if meta['flags'] or meta['hidden']:
            continue
        flag = '--' + field.name.replace('_', '-')
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=meta['help'], **common)
            continue
        if isinstance(kind, types.UnionType):  # X | None: the flag takes an X
            (kind,) = [t for t in typing.get_args(kind) if t is not type(None)]
        parser.add_argument(flag, type=None if kind is str else kind, choices=meta['choices'] or None,
                            help=meta['help'], **common)


def recipe_parser(subparsers, name: str, help: str, config_class: type, recipe) -> argparse.ArgumentParser:
    """The parser of a command that runs ``recipe(config_class(...))``, one flag for each field of the config
    (``add_flags``); the command prints the result's ``summary()``."""

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings():  # a deprecated flag said so on one line (DeprecatedFlag); once is enough
            warnings.simplefilter('ignore', FutureWarning)
            config = config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})
        print(recipe(config).summary())
        return 0

    parser = command_parser(subparsers, name, help, run)
    add_flags(parser, config_class)
    return parser


def command_parser(subparsers, name: str, help: str, run, model_dir: bool = False) -> argparse.ArgumentParser:
    """The parser of a command that runs ``run(args)`` (its exit code), showing its defaults in ``--help``; with
    ``model_dir``, a command on a fine-tuned model, its ``--model-dir``."""
    parser = subparsers.add_parser(name, help=help, formatter_class=DefaultsHelpFormatter)
    parser.set_defaults(func=run)
    if model_dir:
        parser.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    return parser
