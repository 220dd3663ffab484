"""``python -m bert_tutorial download [NAME]``: fetch and cache a pre-trained model, print where it is; then build the
C++ kernels and choose which of them run on this machine, so that the first ``finetune`` starts at once."""
from __future__ import annotations

import argparse

from ..recipes.hub import BUILTIN, DEFAULT_MODEL, ZOO_MODELS, builtin_checkpoint_dir, load_zoo_bert, zoo_files
from ..speed.choice import prepare_kernels
from . import command_parser


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
    if args.kernels:
        print('C++ kernels: building them if needed (10-30 s the first time) and timing them against MXNet\'s '
              'operators on this CPU (a few seconds, once per machine)', flush=True)
        print(f'C++ kernels: {prepare_kernels(args.measure_again)}')
    return 0


def register(subparsers) -> None:
    p = command_parser(subparsers, 'download', 'fetch and cache a pre-trained BERT, print where its files are', run)
    p.add_argument('name', nargs='?', default=DEFAULT_MODEL, help='built-in model or GluonNLP zoo name')
    p.add_argument('--no-kernels', dest='kernels', action='store_false',
                   help='do not build the C++ kernels nor time them (by default they are built and timed now, not at '
                   'the first finetune)')
    p.add_argument('--measure-again', action='store_true',
                   help='time the kernels again even if this machine has a cached choice (it is timed once per '
                   'machine; do this on a quiet machine if the first timing ran next to other work)')
