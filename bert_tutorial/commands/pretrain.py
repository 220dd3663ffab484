"""``python -m bert_tutorial pretrain``: a tiny BERT learns masked LM + next sentence prediction from text."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx

from ..checkpoint import seed_everything
from ..pretrain_data import (
    PretrainingDataset,
    build_vocab,
    load_wikitext2,
    movie_review_documents,
    pretraining_loader,
    read_text_corpus,
    split_documents,
    tokenize_documents,
)
from ..pretrained import load_vocabulary
from ..pretraining import BERTPretrainModel, most_frequent_token, pretrain_loop, save_pretrained

log = logging.getLogger(__name__)


def load_corpus(corpus: str) -> list[list[str]]:
    if corpus == 'movie-reviews':
        return movie_review_documents()
    if corpus == 'wikitext-2':
        return load_wikitext2()
    return read_text_corpus(corpus)


def run(args: argparse.Namespace) -> int:
    if args.units % args.heads:
        raise ValueError(f'--units ({args.units}) must be divisible by --heads ({args.heads})')
    if args.max_len < 5 or args.steps < 1 or args.batch_size < 1:
        raise ValueError('--max-len must be >= 5, --steps and --batch-size >= 1')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mx.gpu(0) if args.ctx == 'gpu' else mx.cpu()
    seed_everything(args.seed)
    started = time.time()
    documents = load_corpus(args.corpus)
    if args.vocab:
        vocab = load_vocabulary(args.vocab)
    else:
        vocab = build_vocab(nlp.data.BERTBasicTokenizer(lower=True), documents, min_freq=args.min_freq,
                            max_size=args.vocab_size)
    tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
    train_docs, eval_docs = split_documents(tokenize_documents(tokenizer, vocab, documents), 0.1, args.seed)
    train_set = PretrainingDataset(train_docs, vocab, args.max_len, seed=args.seed)
    eval_set = PretrainingDataset(eval_docs, vocab, args.max_len, seed=args.seed + 1)
    log.info('%d documents, vocabulary of %d, %d training and %d held-out pairs', len(documents), len(vocab),
             len(train_set), len(eval_set))
    model = BERTPretrainModel(len(vocab), args.units, args.hidden, args.heads, args.layers, args.dropout,
                              max_len=args.max_len)
    model.initialize(mx.init.Normal(0.02), ctx=ctx)
    model.hybridize(static_alloc=True, static_shape=True)
    train_data = pretraining_loader(train_set, args.batch_size, shuffle=True, drop_last=True)
    eval_data = pretraining_loader(eval_set, args.batch_size, shuffle=False)
    baseline = most_frequent_token(train_docs)
    history = pretrain_loop(model, train_data, eval_data, args.steps, args.lr, ctx, checkpoint_dir=out,
                            resume=args.resume, seed=args.seed, baseline_token=baseline,
                            eval_every=args.eval_every, progress=not args.no_progress)
    save_pretrained(model, vocab, out)
    final = history[-1]
    metrics = {k: final[k] for k in ('mlm_loss', 'mlm_accuracy', 'nsp_accuracy', 'mlm_baseline_accuracy')}
    metrics.update(baseline_token=vocab.idx_to_token[baseline], steps=args.steps, seconds=time.time() - started,
                   corpus=args.corpus, vocab_size=len(vocab), num_train_pairs=len(train_set),
                   num_eval_pairs=len(eval_set), config=model.config, history=history)
    (out / 'metrics.json').write_text(json.dumps(metrics, indent=2))
    print(f"held-out MLM accuracy {metrics['mlm_accuracy']:.3f} (always '{metrics['baseline_token']}': "
          f"{metrics['mlm_baseline_accuracy']:.3f}), NSP accuracy {metrics['nsp_accuracy']:.3f}, "
          f"{metrics['seconds']:.0f} s; encoder saved in {out} (fine-tune it: finetune --model {out})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('pretrain', help='pre-train a tiny BERT (masked LM + next sentence) on a corpus',
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--corpus', default='movie-reviews',
                   help="'movie-reviews' (built-in), 'wikitext-2', or a text file / folder of .txt files")
    p.add_argument('--vocab', default=None, help='a WordPiece vocab.txt (default: words of the corpus)')
    p.add_argument('--vocab-size', type=int, default=20000)
    p.add_argument('--min-freq', type=int, default=2)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--units', type=int, default=128)
    p.add_argument('--hidden', type=int, default=256)
    p.add_argument('--heads', type=int, default=2)
    p.add_argument('--dropout', type=float, default=0.1)
    p.add_argument('--max-len', type=int, default=48)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=1400)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--eval-every', type=int, default=200, help='evaluate and checkpoint every N steps')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='gpu' if mx.context.num_gpus() else 'cpu')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='runs/pretrain')
    p.add_argument('--resume', action='store_true')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=run)
