"""The commands of ``python -m bert_tutorial``: one module each, with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import dataclasses


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (every option has a help text: argparse adds defaults to those alone), except
    for flags, whose help says what they switch (``--no-bucket`` stores False into ``bucket``, whose default, True,
    would read as if not bucketing were the default), required options, and positionals without a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.required or (not action.option_strings and action.default is None):
            return action.help
        return super()._get_help_string(action)


def recipe_parser(subparsers, name: str, help: str, config_class: type, recipe) -> argparse.ArgumentParser:
    """The parser of a command that runs ``recipe(config_class(...))``, one flag for each field of the config (the
    caller adds them, named as the fields); the command prints the result's ``summary()``."""

    def run(args: argparse.Namespace) -> int:
        config = config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})
        print(recipe(config).summary())
        return 0

    parser = subparsers.add_parser(name, help=help, formatter_class=DefaultsHelpFormatter)
    parser.set_defaults(func=run)
    return parser
