"""``python -m bert_tutorial pretrain``: a tiny BERT learns masked LM + next sentence prediction from text."""
from __future__ import annotations

import argparse

from ..recipes.pretraining import PretrainConfig, pretrain
from . import recipe_parser

D = PretrainConfig()


def register(subparsers) -> None:
    p = recipe_parser(subparsers, 'pretrain', 'pre-train a tiny BERT (masked LM + next sentence) on a corpus',
                      PretrainConfig, pretrain)
    p.add_argument('--corpus', default=D.corpus,
                   help="'movie-reviews' (built-in), 'wikitext-2', or a text file / folder of .txt files")
    p.add_argument('--encoding', default=D.encoding, help='the encoding of a corpus file or folder')
    p.add_argument('--vocab', default=D.vocab, help='a WordPiece vocab.txt (None: the words of the corpus)')
    p.add_argument('--vocab-size', type=int, default=D.vocab_size, help='at most this many tokens (without --vocab)')
    p.add_argument('--min-freq', type=int, default=D.min_freq,
                   help='a word enters the vocabulary when it occurs at least this often (without --vocab)')
    p.add_argument('--layers', type=int, default=D.layers, help='transformer blocks')
    p.add_argument('--units', type=int, default=D.units, help='the width of the encodings')
    p.add_argument('--hidden', type=int, default=D.hidden, help="the FFN's inner width")
    p.add_argument('--heads', type=int, default=D.heads, help='attention heads (dividing --units)')
    p.add_argument('--dropout', type=float, default=D.dropout, help='dropout inside the encoder')
    p.add_argument('--max-len', type=int, default=D.max_len, help='tokens a sentence pair, [CLS] and [SEP] included')
    p.add_argument('--batch-size', type=int, default=D.batch_size, help='sentence pairs a step')
    p.add_argument('--steps', type=int, default=D.steps, help='training steps')
    p.add_argument('--lr', type=float, default=D.lr, help='peak learning rate (after warm-up, then linear decay to 0)')
    p.add_argument('--eval-every', type=int, default=D.eval_every, help='evaluate and checkpoint every N steps')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default=D.ctx,
                   help='where to compute: the CPU, or the first GPU (needs a CUDA build of MXNet: see the install '
                   'page); the default is gpu when MXNet sees one')
    p.add_argument('--fast', action=argparse.BooleanOptionalAction, default=D.fast,
                   help="on a CPU, BERTAdam's update on the speed plug-in's FusedBERTAdam (the same values, faster); "
                   "--no-fast: GluonNLP's BERTAdam")
    p.add_argument('--seed', type=int, default=D.seed, help='seeds the split, the vocabulary, pairs, masks, weights')
    p.add_argument('--out', default=D.out, help='the output folder: the encoder, its config and vocabulary, '
                   'metrics.json (and checkpoints until the run finishes)')
    p.add_argument('--resume', action='store_true',
                   help='continue from the last checkpoint in --out (a finished run says so and exits 0)')
    p.add_argument('--keep-checkpoints', action='store_true', default=D.keep_checkpoints,
                   help='keep --out/checkpoints when the run finishes (by default they are removed then: they '
                   'exist to resume a run that stopped)')
    p.add_argument('--no-progress', dest='progress', action='store_const', const=False, default=D.progress,
                   help='no progress bar (by default one is drawn on terminals only)')
