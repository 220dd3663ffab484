"""``python -m bert_tutorial export --model-dir runs/finetune``: a deployable symbol graph + parameters."""
from __future__ import annotations

import argparse

from ..export import export_classifier


def run(args: argparse.Namespace) -> int:
    out = export_classifier(args.model_dir, args.out)
    print(f'exported {args.model_dir} to {out}: ' + ', '.join(sorted(p.name for p in out.iterdir())))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('export', help='export a fine-tuned classifier for gluon.SymbolBlock.imports')
    p.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    p.add_argument('--out', default=None, help='where to write (default: MODEL_DIR/export)')
    p.set_defaults(func=run)
