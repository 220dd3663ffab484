"""``python -m bert_tutorial predict --model-dir DIR SENTENCE...`` (``-`` reads one sentence a line from stdin,
``--input FILE`` from a file)."""
from __future__ import annotations

import argparse
import json
import sys

import gluonnlp as nlp

from ..devices import contexts
from ..recipes.hub import load_model
from ..recipes.sentiment_data import read_text_file
from ..tutorial.predict import predict_sentiments
from . import command_parser


def read_sentences(args: argparse.Namespace) -> list[str]:
    if args.input is not None:
        if args.sentences:
            raise ValueError('give sentences as arguments or --input FILE, not both')
        # Lines end at newlines alone: str.splitlines would also cut a sentence at U+2028 and other separators.
        lines = read_text_file(args.input, expected='a text file, one sentence a line', flag='--input').split('\n')
    elif args.sentences == ['-']:
        lines = _read_stdin().split('\n')
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


def _read_stdin() -> str:
    """Standard input as text; bytes that are not UTF-8 are an error naming the line."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, 'buffer') else sys.stdin.read().encode('utf-8')
    try:
        return data.decode('utf-8').removeprefix('\ufeff').replace('\r\n', '\n')
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b'\n') + 1
        raise ValueError(f'standard input, line {line}: not utf-8 ({err.reason} at byte offset {err.start})') from None


def pair_model(config: dict) -> bool | None:
    """Whether a saved classifier takes sentence pairs: ``finetune`` records its columns (text, text pair, label);
    ``None`` for a model saved without them."""
    columns = config.get('columns')
    if isinstance(columns, list) and len(columns) == 3:
        return columns[1] is not None
    return None


def run(args: argparse.Namespace) -> int:
    sentences = read_sentences(args)
    ctx = contexts(args.ctx)[0]
    net, vocabulary, config = load_model(args.model_dir, ctx=ctx, model_type='classifier')
    pair = pair_model(config)
    if pair is False and args.pairs:
        raise ValueError(f'--pairs: {args.model_dir} is a single-sentence model (trained on the column '
                         f'{config["columns"][0]!r} alone): give one text a sentence, without --pairs')
    if pair and not args.pairs:
        raise ValueError(f'{args.model_dir} is a sentence-pair model (trained on the columns {config["columns"][0]!r} '
                         f'and {config["columns"][1]!r}): give each sentence as two texts separated by a tab, with '
                         '--pairs')
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
    p = command_parser(subparsers, 'predict', 'predict the class of sentences with a fine-tuned model', run,
                       model_dir=True)
    p.add_argument('--input', default=None, help='a text file of sentences, one a line (None: the arguments)')
    p.add_argument('--json', action='store_true', help='one JSON object a line: text, label, probability')
    p.add_argument('--pairs', action='store_true', help='each sentence is two texts separated by a tab')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='cpu',
                   help='where to compute: the CPU or the first GPU (needs a CUDA build of MXNet: see the install '
                   'page)')
    p.add_argument('sentences', nargs='*', help="sentences to classify, or - to read one a line from stdin")
