"""``python -m bert_tutorial evaluate --model-dir DIR --data FILE``: accuracy, per-class precision/recall/F1 and the
confusion matrix of a saved classifier on labelled text, printed and written as JSON."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import gluonnlp as nlp

from ..devices import contexts
from ..files import check_output, write_atomic
from ..recipes.evaluation import classification_report
from ..recipes.hub import load_model
from ..recipes.sentiment_data import check_tokens, class_order, load_movie_reviews, read_labelled_lines
from ..tutorial.predict import predict_sentiments
from . import command_parser
from .predict import pair_model


def class_names(examples: list[tuple[str, object]], labels: list[str], source: str,
                lines: list[int] | None = None) -> list[str]:
    """Each example's label as one of the model's class names: a name, or (when no class name is an integer, so
    that nothing is ambiguous) its index. Labels that are neither: ``ValueError`` listing the file's labels and the
    model's classes (``lines``: each example's line in ``source``, for the message)."""
    by_index = not any(re.fullmatch(r'-?\d+', name) for name in labels)
    keys = [str(label) for _, label in examples]
    unknown = [k for k in keys if k not in labels and not (by_index and k.isdigit() and int(k) < len(labels))]
    if unknown:
        first = keys.index(unknown[0])
        where = f'line {lines[first]}' if lines else f'example {first + 1}'
        raise ValueError(f'{source}: the labels {class_order(unknown)} are not classes of the model {labels}'
                         f'{f" nor their indices 0-{len(labels) - 1}" if by_index else ""} (the file\'s labels: '
                         f'{class_order(keys)}; first on {where})')
    return [k if k in labels else labels[int(k)] for k in keys]


def _columns(args: argparse.Namespace, config: dict) -> tuple[str, str | None, str]:
    """The text, text pair and label columns to read: the flags, else as the model was trained."""
    saved = config.get('columns') or [None, None, None]
    columns = (args.text_column or saved[0] or 'text', args.text_pair_column or saved[1],
               args.label_column or saved[2] or 'label')
    flags = ('--text-column', '--text-pair-column', '--label-column')
    for i in range(3):
        for j in range(i + 1, 3):
            if columns[i] is not None and columns[i] == columns[j]:
                raise ValueError(f'{flags[i]} and {flags[j]} are both {columns[i]!r}: the text, the second text and '
                                 'the label must be different columns')
    pair = pair_model(config)
    if pair is False and args.text_pair_column:
        raise ValueError(f'--text-pair-column: {args.model_dir} is a single-sentence model (trained on the column '
                         f'{saved[0]!r} alone): score it on single texts, without --text-pair-column')
    if pair and args.data == 'movie-reviews':
        raise ValueError(f'{args.model_dir} is a sentence-pair model: the built-in movie-reviews are single texts; '
                         f'give a --data file with the columns {saved[0]!r} and {saved[1]!r}')
    return columns


def run(args: argparse.Namespace) -> int:
    default = Path(args.model_dir) / 'evaluation.json'
    # Before any work: never over an input, a model's files or (without --overwrite) any other file.
    output = check_output(args.output or default, '--output', overwrite=args.overwrite, default=default,
                          inputs=[args.model_dir] + ([] if args.data == 'movie-reviews' else [args.data]))
    ctx = contexts(args.ctx)[0]
    net, vocabulary, config = load_model(args.model_dir, ctx=ctx, model_type='classifier')
    tokenizer = nlp.data.BERTTokenizer(vocabulary, lower=True)
    text_column, text_pair_column, label_column = _columns(args, config)
    lines = None
    if args.data == 'movie-reviews':
        examples = load_movie_reviews('test')
    else:
        rows = read_labelled_lines(args.data, text_column, label_column, text_pair_column=text_pair_column)
        check_tokens(rows, tokenizer, args.data, [text_column, text_pair_column] if text_pair_column else [text_column])
        lines, examples = [n for n, _ in rows], [row for _, row in rows]
    examples = [(row[:-1] if len(row) == 3 else row[0], row[-1]) for row in examples]
    labels = config['labels']
    actual = class_names(examples, labels, args.data, lines)
    predicted = [label for label, _ in predict_sentiments(
        net, ctx, vocabulary, tokenizer, [t for t, _ in examples], max_len=config['max_len'], labels=labels)]
    report = dict(classification_report(actual, predicted, labels), model_dir=str(args.model_dir), data=args.data)
    width = max(len(name) for name in labels)
    print(f"accuracy {report['accuracy']:.4f} on {report['examples']} examples of {args.data}")
    print(f"{'class':{width}s}  precision  recall  f1      support")
    for name, c in report['classes'].items():
        print(f"{name:{width}s}  {c['precision']:.4f}     {c['recall']:.4f}  {c['f1']:.4f}  {c['support']}")
    print('confusion (rows: actual, columns: predicted, in the order above):')
    for name, row in zip(labels, report['confusion']):
        print(f"{name:{width}s}  " + '  '.join(f'{n:6d}' for n in row))
    write_atomic(output, json.dumps(report, indent=2))
    print(f'written to {output}')
    return 0


def register(subparsers) -> None:
    p = command_parser(subparsers, 'evaluate', 'score a fine-tuned classifier on labelled text', run, model_dir=True)
    p.add_argument('--data', required=True,
                   help="a .csv, .tsv or .jsonl file of labelled text, or 'movie-reviews' (the built-in test split)")
    p.add_argument('--text-column', default=None, help='None: as the model was trained, else text')
    p.add_argument('--text-pair-column', default=None, help='sentence pairs (None: as the model was trained)')
    p.add_argument('--label-column', default=None,
                   help="class names or their indices (0 = the first class); None: as trained, else label")
    p.add_argument('--output', default=None,
                   help='where to write the JSON report (None: MODEL_DIR/evaluation.json); never an input or a path '
                   'inside a model folder')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='cpu',
                   help='where to compute: the CPU or the first GPU (needs a CUDA build of MXNet: see the install '
                   'page)')
