"""``python -m bert_tutorial predict --model-dir DIR SENTENCE...`` (``-`` reads one sentence a line from stdin,
``--input FILE`` from a file)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gluonnlp as nlp

from ..devices import contexts
from ..hub import load_model
from ..predict import predict_sentiments
from . import DefaultsHelpFormatter


def read_sentences(args: argparse.Namespace) -> list[str]:
    if args.input is not None:
        if args.sentences:
            raise ValueError('give sentences as arguments or --input FILE, not both')
        path = Path(args.input)
        if not path.is_file():
            raise FileNotFoundError(f'--input: {path} does not exist (expected a text file, one sentence a line)')
        lines = path.read_text(encoding='utf-8').splitlines()
    elif args.sentences == ['-']:
        lines = [line.rstrip('\n') for line in sys.stdin]
    else:
        lines = args.sentences
    sentences = [line for line in lines if line.strip()]
    if args.pairs:
        bad = [line for line in sentences if line.count('\t') != 1]
        if bad:
            raise ValueError(f'--pairs: each line must be two texts separated by one tab, got {bad[0]!r}')
        sentences = [tuple(line.split('\t')) for line in sentences]
    if not sentences:
        raise ValueError('no sentence given: pass sentences as arguments, - to read them from standard input, or '
                         '--input FILE')
    return sentences


def run(args: argparse.Namespace) -> int:
    sentences = read_sentences(args)
    ctx = contexts(args.ctx)[0]
    net, vocabulary, config = load_model(args.model_dir, ctx=ctx, model_type='classifier')
    tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
    results = predict_sentiments(net, ctx, vocabulary, tokenizer, sentences, max_len=config['max_len'],
                                 labels=config['labels'])
    for sentence, (label, prob) in zip(sentences, results):
        text = '\t'.join(sentence) if isinstance(sentence, tuple) else sentence
        if args.json:
            print(json.dumps({'text': list(sentence) if isinstance(sentence, tuple) else sentence, 'label': label,
                              'probability': prob}))
        else:
            print(f'{label}\t{prob:.4f}\t{text}' if len(sentences) > 1 else f'{label}\t{prob:.4f}')
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('predict', help='predict the class of sentences with a fine-tuned model',
                              formatter_class=DefaultsHelpFormatter)
    p.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    p.add_argument('--input', default=None, help='a text file of sentences, one a line (None: the arguments)')
    p.add_argument('--json', action='store_true', help='one JSON object a line: text, label, probability')
    p.add_argument('--pairs', action='store_true', help='each sentence is two texts separated by a tab')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='cpu',
                   help='where to compute: the CPU or the first GPU (needs a CUDA build of MXNet: see the install '
                   'page)')
    p.add_argument('sentences', nargs='*', help="sentences to classify, or - to read one a line from stdin")
    p.set_defaults(func=run)
