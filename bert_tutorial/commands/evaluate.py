"""``python -m bert_tutorial evaluate --model-dir DIR --data FILE``: accuracy, per-class precision/recall/F1 and the
confusion matrix of a saved classifier on labelled text, printed and written as JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import gluonnlp as nlp

from ..devices import contexts
from ..files import check_output, write_atomic
from ..hub import load_model
from ..predict import classification_report, predict_sentiments
from ..sentiment_data import load_movie_reviews, read_labelled_file


def class_names(examples: list[tuple[str, object]], labels: list[str], source: str) -> list[str]:
    """Each example's label as one of the model's class names (a name, or its index)."""
    names = []
    for number, (_, label) in enumerate(examples, start=1):
        key = str(label)
        if key in labels:
            names.append(key)
        elif key.isdigit() and int(key) < len(labels):
            names.append(labels[int(key)])
        else:
            raise ValueError(f'{source}, example {number}: label {key!r} is not one of the model\'s classes {labels} '
                             f'(or their indices 0-{len(labels) - 1})')
    return names


def run(args: argparse.Namespace) -> int:
    default = Path(args.model_dir) / 'evaluation.json'
    # Before any work: never over an input, a model's files or (without --overwrite) any other file.
    output = check_output(args.output or default, '--output', overwrite=args.overwrite, default=default,
                          inputs=[args.model_dir] + ([] if args.data == 'movie-reviews' else [args.data]))
    ctx = contexts(args.ctx)[0]
    net, vocabulary, config = load_model(args.model_dir, ctx=ctx, model_type='classifier')
    if args.data == 'movie-reviews':
        examples = load_movie_reviews('test')
    else:
        columns = config.get('columns') or [None, None, None]
        examples = read_labelled_file(args.data, args.text_column or columns[0] or 'text',
                                      args.label_column or columns[2] or 'label',
                                      text_pair_column=args.text_pair_column or columns[1])
    examples = [(row[:-1] if len(row) == 3 else row[0], row[-1]) for row in examples]
    labels = config['labels']
    actual = class_names(examples, labels, args.data)
    predicted = [label for label, _ in predict_sentiments(
        net, ctx, vocabulary, nlp.data.BERTTokenizer(vocabulary, lower=True), [t for t, _ in examples],
        max_len=config['max_len'], labels=labels)]
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
    p = subparsers.add_parser('evaluate', help='score a fine-tuned classifier on labelled text')
    p.add_argument('--model-dir', default='runs/finetune', help='output folder of finetune')
    p.add_argument('--data', required=True,
                   help="a .csv, .tsv or .jsonl file of labelled text, or 'movie-reviews' (the built-in test split)")
    p.add_argument('--text-column', default=None, help='default: as the model was trained, else text')
    p.add_argument('--text-pair-column', default=None, help='sentence pairs: default as the model was trained')
    p.add_argument('--label-column', default=None,
                   help="class names or their indices (0 = the first class); default: as trained, else label")
    p.add_argument('--output', default=None,
                   help='where to write the JSON report (default: MODEL_DIR/evaluation.json); never an input or a '
                   'path inside a model folder')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='cpu')
    p.set_defaults(func=run)
