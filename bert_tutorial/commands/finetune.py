"""``python -m bert_tutorial finetune``: the package's sentiment fine-tuning recipe, offline by default."""
from __future__ import annotations

import argparse

from ..recipes.finetuning import FinetuneConfig, finetune
from . import recipe_parser

D = FinetuneConfig()


def register(subparsers) -> None:
    p = recipe_parser(subparsers, 'finetune', 'fine-tune a pre-trained BERT for sentiment analysis', FinetuneConfig,
                      finetune)
    p.add_argument('--model', default=D.model,
                   help='built-in model, GluonNLP zoo name, Hugging Face BERT directory, or a pretrain output dir')
    p.add_argument('--data', choices=('movie-reviews', 'imdb'), default=D.data,
                   help='the built-in corpus or IMDB (not used with --train)')
    p.add_argument('--imdb-root', default=D.imdb_root,
                   help='folder with aclImdb/ or aclImdb_v1.tar.gz (--data imdb; None: the cache under MXNET_HOME)')
    p.add_argument('--train', default=D.train,
                   help='your own data: a .csv, .tsv or .jsonl file of labelled text (None: --data)')
    p.add_argument('--validation', default=D.validation,
                   help='a file scored after every epoch (with --train; None: --validation-fraction of --train)')
    p.add_argument('--test', default=D.test, help='a file scored once, at the end (with --train; None: no test)')
    p.add_argument('--text-column', default=D.text_column, help='the column (or JSON key) of the text')
    p.add_argument('--text-pair-column', default=D.text_pair_column,
                   help='the second text of sentence pairs (None: single texts)')
    p.add_argument('--label-column', default=D.label_column,
                   help='the column of the labels: any strings or integers; classes in numeric order if all are '
                   'integers, else alphabetical')
    p.add_argument('--validation-fraction', type=float, default=D.validation_fraction,
                   help='of the training data (of its movies for the built-in corpus) held out for validation, '
                   'when no --validation file is given (0: none, then with --select last)')
    p.add_argument('--select', choices=('last', 'best'), default=D.select,
                   help="keep the parameters of the last epoch, or of the best one on the validation data")
    p.add_argument('--epochs', type=int, default=D.epochs, help='passes over the training data')
    p.add_argument('--lr', type=float, default=D.lr, help='peak learning rate (after warm-up, then linear decay to 0)')
    p.add_argument('--warmup-ratio', type=float, default=D.warmup_ratio, help='warm-up over this share of all steps')
    p.add_argument('--tutorial-recipe', action='store_true',
                   help="the tutorial's train_loop recipe instead: weight decay on LayerNorm and biases too, 50 "
                   "warm-up steps (not --warmup-ratio), the gradient of the batch's summed loss")
    p.add_argument('--batch-size', type=int, default=D.batch_size, help='examples a step')
    p.add_argument('--max-len', type=int, default=D.max_len,
                   help="word pieces an example, [CLS] and [SEP] included (capped at the model's positions)")
    p.add_argument('--max-train', type=int, default=D.max_train, help='use at most N training examples (None: all)')
    p.add_argument('--max-test', type=int, default=D.max_test,
                   help='use at most N test examples, and at most N validation examples (None: all)')
    p.add_argument('--dropout', type=float, default=D.dropout, help='dropout before the output layer')
    p.add_argument('--pooling', choices=('auto', 'cls', 'mean'), default=D.pooling,
                   help="sentence encoding: pooled [CLS] (the tutorial) or the mean over tokens; auto: mean for "
                   "sentence encoders (all-MiniLM-L6-v2), cls otherwise")
    p.add_argument('--bert-dropout', type=float, default=D.bert_dropout, help='dropout inside BERT')
    p.add_argument('--no-bucket', dest='bucket', action='store_false', help='pad to the longest in a random batch')
    p.add_argument('--no-hybridize', dest='hybridize', action='store_false',
                   help='run the model imperatively instead of as a hybridized (static) graph')
    p.add_argument('--fast', action=argparse.BooleanOptionalAction, default=D.fast,
                   help="on a CPU, the speed plug-in: its C++ kernels where they are faster on this machine (timed "
                   "once and cached; BERT_TUTORIAL_KERNEL_CHOICE overrides), its dropout kernel (other masks than "
                   "MXNet's from the same seed) and FusedBERTAdam; it does nothing on a GPU. --no-fast: MXNet's "
                   "operators and GluonNLP's BERTAdam, as the tutorial")
    p.add_argument('--accept-other-dropout-masks', action='store_true', default=D.accept_other_dropout_masks,
                   help='with --resume: continue a run whose checkpoint was trained with the other dropout (the '
                   "kernel's masks on a CPU with --fast, MXNet's elsewhere), with this run's masks from there on")
    # 0.5's speed flags, deprecated (hidden; they go in 0.7): each turns one part of --fast off
    for flag, field in (('--native-layer-norm', 'matmul_layer_norm'), ('--mxnet-dropout', 'kernel_dropout'),
                        ('--mxnet-ops', 'kernel_ops')):
        p.add_argument(flag, dest=field, action='store_const', const=False, default=None, help=argparse.SUPPRESS)
    p.add_argument('--kernel-dropout', dest='kernel_dropout', action='store_const', const=True, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument('--freeze-word-embed', action='store_true', default=D.freeze_word_embed,
                   help='do not update the word embedding (faster on CPU; the default before 0.3)')
    p.add_argument('--train-word-embed', dest='freeze_word_embed', action='store_false', default=D.freeze_word_embed,
                   help=argparse.SUPPRESS)  # the default since 0.3; accepted from older command lines
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default=D.ctx,
                   help='where to compute: the CPU, or every visible GPU (needs a CUDA build of MXNet: see the '
                   'install page); the default is gpu when MXNet sees one')
    p.add_argument('--kvstore', choices=('device', 'dist_sync', 'dist_device_sync'), default=D.kvstore,
                   help='dist_sync: data-parallel over workers started by mxnet/tools/launch.py or DMLC_* variables')
    p.add_argument('--num-workers', type=int, default=D.num_workers, help='data loader worker processes')
    p.add_argument('--seed', type=int, default=D.seed,
                   help='seeds the held-out split, the new layer, the batch order and the dropout masks')
    p.add_argument('--out', default=D.out, help='the output folder: the model, its config and vocabulary, '
                   'metrics.json (and checkpoints until the run finishes)')
    p.add_argument('--resume', action='store_true',
                   help='continue from the last checkpoint in --out (a finished run says so and exits 0)')
    p.add_argument('--checkpoint-every', type=int, default=D.checkpoint_every,
                   help='also checkpoint every N steps (None: after every epoch only)')
    p.add_argument('--keep-checkpoints', action='store_true', default=D.keep_checkpoints,
                   help='keep --out/checkpoints when the run finishes (by default they are removed then: they '
                   'exist to resume a run that stopped)')
    p.add_argument('--log-interval', type=int, default=D.log_interval, help="print the tutorial's Batch line every "
                   'N batches')
    p.add_argument('--no-progress', dest='progress', action='store_const', const=False, default=D.progress,
                   help='no progress bar (by default one is drawn on terminals only)')
