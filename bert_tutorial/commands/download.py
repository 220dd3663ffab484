"""``python -m bert_tutorial download [NAME]``: fetch and cache a pre-trained model, print where it is."""
from __future__ import annotations

import argparse

from ..hub import BUILTIN, DEFAULT_MODEL, ZOO_MODELS, builtin_checkpoint_dir, load_zoo_bert, zoo_files
from . import DefaultsHelpFormatter


def run(args: argparse.Namespace) -> int:
    if args.name in BUILTIN:
        folder = builtin_checkpoint_dir(args.name)
        print(f'{args.name}: {folder}')
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith('.'):
                print(f'  {path.name}  {path.stat().st_size:,} bytes')
    elif args.name in ZOO_MODELS:
        load_zoo_bert(args.name)
        print(f'{args.name}: ' + ', '.join(str(p) for p in zoo_files(args.name)))
    else:
        raise ValueError(f'NAME must be one of {sorted(BUILTIN) + list(ZOO_MODELS)}, got {args.name!r}')
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('download', help='fetch and cache a pre-trained BERT, print where its files are',
                              formatter_class=DefaultsHelpFormatter)
    p.add_argument('name', nargs='?', default=DEFAULT_MODEL, help='built-in model or GluonNLP zoo name')
    p.set_defaults(func=run)
