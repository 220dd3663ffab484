"""``python -m bert_tutorial finetune``: the tutorial's sentiment fine-tuning, offline by default."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import gluonnlp as nlp
import mxnet as mx
from mxnet import gluon

from ..checkpoint import seed_everything
from ..data import load_imdb, load_movie_reviews, sentiment_loader, subset, transform_label
from ..layer_norm import use_matmul_layer_norm
from ..model import BERTClassifier
from ..predict import save_classifier
from ..pretrained import DEFAULT_MODEL, describe_bert, get_pretrained_bert
from ..training import train_loop

log = logging.getLogger(__name__)

# Checkpoints trained as sentence encoders with mean pooling (their [CLS] pooler was not trained for it).
SENTENCE_ENCODERS = {DEFAULT_MODEL}


def contexts(kind: str) -> list[mx.Context]:
    """``cpu``, or every visible GPU for ``gpu``."""
    if kind == 'gpu':
        n = mx.context.num_gpus()
        if n == 0:
            raise ValueError('--ctx gpu: no GPU is visible to MXNet')
        return [mx.gpu(i) for i in range(n)]
    return [mx.cpu()]


def load_examples(data: str, imdb_root: str | None, seed: int):
    if data == 'movie-reviews':
        return load_movie_reviews('train', seed=seed), load_movie_reviews('test', seed=seed)
    return ([transform_label(x) for x in load_imdb('train', imdb_root)],
            [transform_label(x) for x in load_imdb('test', imdb_root)])


def build_classifier(bert, ctx: list[mx.Context], pooling: str = 'mean', dropout: float = 0.1,
                     freeze_word_embed: bool = True, hybridize: bool = True,
                     matmul_layer_norm: bool = True) -> BERTClassifier:
    """The classifier as ``finetune`` trains it: a new output layer on ``bert``, with the speed settings."""
    if freeze_word_embed:
        # The word embedding is 30522 x units: its dense Adam update dominates short batches on CPU,
        # and fine-tuning for sentiment barely moves it.
        embed = bert.word_embed[0] if isinstance(bert, nlp.model.BERTModel) else bert.word_embed
        embed.collect_params().setattr('grad_req', 'null')
    net = BERTClassifier(bert, 2, dropout=dropout, pooling=pooling)
    net.classifier.initialize(mx.init.Normal(0.02), ctx=ctx)
    if len(ctx) > 1:
        net.collect_params().reset_ctx(ctx)
    if matmul_layer_norm:
        use_matmul_layer_norm(net)
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ValueError('--epochs and --batch-size must be >= 1 and --lr > 0')
    if args.max_len < 3:
        raise ValueError(f'--max-len must be >= 3, got {args.max_len}')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = contexts(args.ctx)
    seed_everything(args.seed)
    started = time.time()
    log.info('loading %s and the pre-trained model %s', args.data, args.model)
    bert, vocabulary = get_pretrained_bert(args.model, ctx=ctx[0], dropout=args.bert_dropout)
    base = describe_bert(bert) if isinstance(bert, nlp.model.BERTModel) else bert.describe()
    limit = base['max_position_embeddings'] if 'max_position_embeddings' in base else base['max_len']
    if args.max_len > limit:
        log.warning('--max-len %d is more than %s has positions for: using %d', args.max_len, args.model, limit)
        args.max_len = limit
    train, test = load_examples(args.data, args.imdb_root, args.seed)
    train, test = subset(train, args.max_train, args.seed), subset(test, args.max_test, args.seed)
    kvstore = args.kvstore
    if kvstore.startswith('dist'):
        # Workers started by MXNet's launcher (or the DMLC_* variables) each train on their own shard.
        kvstore = mx.kv.create(kvstore)
        train = train[kvstore.rank::kvstore.num_workers]
        log.info('worker %d of %d: %d training examples', kvstore.rank, kvstore.num_workers, len(train))
    tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
    train_data = sentiment_loader(train, tokenizer, vocabulary, args.max_len, args.batch_size, shuffle=True,
                                  bucket=args.bucket)
    test_data = sentiment_loader(test, tokenizer, vocabulary, args.max_len, args.batch_size, shuffle=False,
                                 bucket=args.bucket)
    log.info('%d training and %d test examples, %d batches an epoch', len(train), len(test), len(train_data))

    pooling = args.pooling
    if pooling == 'auto':  # sentence encoders were trained with mean pooling; BERT's pooler is for [CLS]
        pooling = 'mean' if args.model in SENTENCE_ENCODERS else 'cls'
    net = build_classifier(bert, ctx, pooling=pooling, dropout=args.dropout, freeze_word_embed=args.freeze_word_embed,
                           hybridize=args.hybridize, matmul_layer_norm=args.matmul_layer_norm)
    # The package's recipe (GluonNLP's fine-tuning script's choices); train_loop's defaults are the tutorial's.
    recipe = {} if args.tutorial_recipe else dict(no_decay_norm_bias=True, warmup_ratio=args.warmup_ratio,
                                                  loss_reduction='mean')
    history = train_loop(net, train_data, test_data, args.epochs, args.lr, ctx,
                         gluon.loss.SoftmaxCELoss(), **recipe, checkpoint_dir=out,
                         resume=args.resume, seed=args.seed, progress=not args.no_progress,
                         log_interval=args.log_interval, checkpoint_every=args.checkpoint_every, kvstore=kvstore)
    save_classifier(net, vocabulary, out, {'base_model': str(args.model), 'bert': base, 'max_len': args.max_len})
    last = history[-1]
    metrics = {
        'test_accuracy': last['test_accuracy'],
        'train_samples_per_second': sum(h['samples_per_second'] * h['seconds'] for h in history)
        / sum(h['seconds'] for h in history),
        'seconds': time.time() - started, 'epochs': args.epochs, 'num_train': len(train), 'num_test': len(test),
        'model': str(args.model), 'data': args.data, 'max_len': args.max_len, 'batch_size': args.batch_size,
        'lr': args.lr, 'seed': args.seed, 'history': history,
    }
    (out / 'metrics.json').write_text(json.dumps(metrics, indent=2))
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epoch(s), "
          f"{metrics['seconds']:.0f} s; model saved in {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('finetune', help='fine-tune a pre-trained BERT for sentiment analysis',
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', default=DEFAULT_MODEL,
                   help='built-in model, GluonNLP zoo name, Hugging Face BERT directory, or a pretrain output dir')
    p.add_argument('--data', choices=('movie-reviews', 'imdb'), default='movie-reviews')
    p.add_argument('--imdb-root', default=None, help='folder with aclImdb/ or aclImdb_v1.tar.gz (for --data imdb)')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--lr', type=float, default=5e-5)
    p.add_argument('--warmup-ratio', type=float, default=0.1, help='warm-up over this share of all steps')
    p.add_argument('--tutorial-recipe', action='store_true',
                   help="the tutorial's train_loop recipe instead: weight decay on LayerNorm and biases too, 50 "
                   "warm-up steps (not --warmup-ratio), the gradient of the batch's summed loss")
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--max-len', type=int, default=128)
    p.add_argument('--max-train', type=int, default=None, help='use at most N training examples')
    p.add_argument('--max-test', type=int, default=None, help='use at most N test examples')
    p.add_argument('--dropout', type=float, default=0.1, help='dropout before the output layer')
    p.add_argument('--pooling', choices=('auto', 'cls', 'mean'), default='auto',
                   help="sentence encoding: pooled [CLS] (the tutorial) or the mean over tokens; auto: mean for "
                   "sentence encoders (all-MiniLM-L6-v2), cls otherwise")
    p.add_argument('--bert-dropout', type=float, default=0.1, help='dropout inside BERT')
    p.add_argument('--no-bucket', dest='bucket', action='store_false', help='pad to the longest in a random batch')
    p.add_argument('--no-hybridize', dest='hybridize', action='store_false')
    p.add_argument('--native-layer-norm', dest='matmul_layer_norm', action='store_false',
                   help="MXNet's LayerNorm kernel (its CPU backward is slow) instead of MatmulLayerNorm")
    p.add_argument('--train-word-embed', dest='freeze_word_embed', action='store_false',
                   help='also update the word embedding (slower)')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='gpu' if mx.context.num_gpus() else 'cpu')
    p.add_argument('--kvstore', choices=('device', 'dist_sync', 'dist_device_sync'), default='device',
                   help='dist_sync: data-parallel over workers started by tools/launch.py or DMLC_* variables')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='runs/finetune')
    p.add_argument('--resume', action='store_true', help='continue from the last checkpoint in --out')
    p.add_argument('--checkpoint-every', type=int, default=None, help='also checkpoint every N steps')
    p.add_argument('--log-interval', type=int, default=50)
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=run)
