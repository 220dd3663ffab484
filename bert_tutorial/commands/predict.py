"""``python -m bert_tutorial predict --model-dir DIR SENTENCE...`` (``-`` reads one sentence a line from stdin)."""
from __future__ import annotations

import argparse
import sys

import gluonnlp as nlp
import mxnet as mx

from ..hub import load_model
from ..predict import predict_sentiments


def run(args: argparse.Namespace) -> int:
    sentences = args.sentences
    if sentences == ['-']:
        sentences = [line.rstrip('\n') for line in sys.stdin if line.strip()]
    if not sentences:
        raise ValueError('no sentence given: pass sentences as arguments, or - to read them from standard input')
    net, vocabulary, config = load_model(args.model_dir, ctx=mx.cpu(), model_type='classifier')
    tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
    results = predict_sentiments(net, mx.cpu(), vocabulary, tokenizer, sentences, max_len=config['max_len'])
    for sentence, (label, prob) in zip(sentences, results):
        print(f'{label}\t{prob:.4f}\t{sentence}' if len(sentences) > 1 else f'{label}\t{prob:.4f}')
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser('predict', help='predict the sentiment of sentences with a fine-tuned model')
    p.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    p.add_argument('sentences', nargs='+', help="sentences to classify, or - to read one a line from stdin")
    p.set_defaults(func=run)
