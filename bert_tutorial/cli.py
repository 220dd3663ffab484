"""``python -m bert_tutorial <command>``: each command lives in ``bert_tutorial/commands/<name>.py``.

A command module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed arguments and returning an exit code.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .commands import download, evaluate, export, finetune, predict, pretrain
from .files import WriteError

COMMANDS = (download, finetune, predict, evaluate, pretrain, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bert_tutorial',
                                     description='BERT pre-training and fine-tuning, from the MXNet/Gluon tutorial.')
    parser.add_argument('-v', '--verbose', action='store_true', help='log debug messages')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # mxnet 1.9.1 under numpy 1.23 warns at import (np.bool, distutils); nothing a user can act on.
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s', datefmt='%H:%M:%S')
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except WriteError as err:  # after the work: a full disk, a folder in a file's place
        print(f'error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
