"""``python -m bert_tutorial pretrain``: a tiny BERT learns masked LM + next sentence prediction from text."""
from __future__ import annotations

from ..pretraining import PretrainConfig, pretrain
from . import recipe_parser

D = PretrainConfig()


def register(subparsers) -> None:
    p = recipe_parser(subparsers, 'pretrain', 'pre-train a tiny BERT (masked LM + next sentence) on a corpus',
                      PretrainConfig, pretrain)
    p.add_argument('--corpus', default=D.corpus,
                   help="'movie-reviews' (built-in), 'wikitext-2', or a text file / folder of .txt files")
    p.add_argument('--encoding', default=D.encoding, help='the encoding of a corpus file or folder')
    p.add_argument('--vocab', default=D.vocab, help='a WordPiece vocab.txt (default: words of the corpus)')
    p.add_argument('--vocab-size', type=int, default=D.vocab_size)
    p.add_argument('--min-freq', type=int, default=D.min_freq)
    p.add_argument('--layers', type=int, default=D.layers)
    p.add_argument('--units', type=int, default=D.units)
    p.add_argument('--hidden', type=int, default=D.hidden, help="the FFN's inner width")
    p.add_argument('--heads', type=int, default=D.heads)
    p.add_argument('--dropout', type=float, default=D.dropout)
    p.add_argument('--max-len', type=int, default=D.max_len)
    p.add_argument('--batch-size', type=int, default=D.batch_size)
    p.add_argument('--steps', type=int, default=D.steps)
    p.add_argument('--lr', type=float, default=D.lr)
    p.add_argument('--eval-every', type=int, default=D.eval_every, help='evaluate and checkpoint every N steps')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default=D.ctx)
    p.add_argument('--seed', type=int, default=D.seed)
    p.add_argument('--out', default=D.out)
    p.add_argument('--resume', action='store_true')
    p.add_argument('--no-progress', dest='progress', action='store_const', const=False, default=D.progress,
                   help='no progress bar (by default one is drawn on terminals only)')
