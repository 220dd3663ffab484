"""``python -m bert_tutorial export --model-dir runs/finetune``: a deployable symbol graph + parameters."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..files import check_output
from ..recipes.export import export_classifier
from ..recipes.sentiment_data import load_movie_reviews, subset
from . import command_parser


def run(args: argparse.Namespace) -> int:
    default = Path(args.model_dir) / 'export'
    # Before any work: never over the model, into another model folder or (without --overwrite) an earlier export.
    out = check_output(args.out or default, '--out', inputs=[args.model_dir], overwrite=args.overwrite, folder=True,
                       default=default)
    calibration = None
    if args.int8:
        if args.calib_sentences < 1:
            raise ValueError(f'--calib-sentences must be >= 1, got {args.calib_sentences}')
        calibration = [text for text, _ in subset(load_movie_reviews('train'), args.calib_sentences, seed=1)]
    out = export_classifier(args.model_dir, out, int8_calibration=calibration, calib_mode=args.calib_mode,
                            overwrite=args.overwrite)
    kind = ' (INT8)' if args.int8 else ''
    print(f'exported {args.model_dir}{kind} to {out}: ' + ', '.join(sorted(p.name for p in out.iterdir())))
    return 0


def register(subparsers) -> None:
    p = command_parser(subparsers, 'export', 'export a fine-tuned classifier for gluon.SymbolBlock.imports', run,
                       model_dir=True)
    p.add_argument('--out', default=None,
                   help='a new or empty folder to write into (None: MODEL_DIR/export); never the model folder or a '
                   'folder inside another model')
    p.add_argument('--overwrite', action='store_true', help='replace an earlier export in --out')
    p.add_argument('--int8', action='store_true',
                   help='write an INT8 graph (oneDNN, CPU) calibrated on sentences of the built-in training corpus')
    p.add_argument('--calib-sentences', type=int, default=320, help='calibration sentences for --int8')
    p.add_argument('--calib-mode', choices=('naive', 'entropy'), default='naive', help='calibration for --int8')
