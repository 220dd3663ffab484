"""Record a finished ``finetune`` run's figures for the README and the site's figures page.

    python benchmarks/record_run.py runs/finetune --name "finetune (defaults)"

Reads ``RUN/metrics.json`` and writes ``benchmarks/results/runs/<slug>.json``: the command that reproduces the
run (rebuilt from its saved config: the flags whose values differ from the command's defaults), the accuracies,
the epoch kept, the time, and the date and machine the run recorded.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from bert_tutorial import FinetuneConfig, PretrainConfig
from bert_tutorial.cli import build_parser
from bert_tutorial.devices import measured

RESULTS = Path(__file__).parent / 'results' / 'runs'
# Where a run writes and how it reports (the configs' fields marked free='output'): not part of the computation a
# recorded command reproduces.
REPORTING = {f.name for config in (FinetuneConfig, PretrainConfig) for f in dataclasses.fields(config)
             if f.metadata['free'] == 'output'}
# What finetune records of how it ran, not a setting: kernel_dropout (whether the dropout kernel ran, decided by fast
# and the machine, as 0.5 recorded it too: False also where the kernels did not build).
AS_IT_RAN = {'kernel_dropout'}


def command_of(config: dict, command: str = 'finetune') -> str:
    """``python -m bert_tutorial COMMAND`` with the flags that give ``config`` (defaults left out)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    words = ['python -m bert_tutorial', command]
    for action in sub._actions:
        if action.dest not in config or action.dest in REPORTING | AS_IT_RAN or not action.option_strings:
            continue
        value, flag = config[action.dest], action.option_strings[-1]
        if isinstance(action, argparse.BooleanOptionalAction):  # --fast / --no-fast
            if value is not None and value != action.default:
                words.append(next(o for o in action.option_strings if o.startswith('--no-') is not bool(value)))
        elif action.nargs == 0:  # store_true/false/const; two flags may set one field both ways
            if value == action.const and value != action.default:
                words.append(flag)
        elif value != action.default and value is not None:  # None: a setting not used (data with a train file)
            words += [flag, str(value)]
    if command == 'finetune' and config.get('fast', True) and config.get('kernel_dropout') is False:
        # a fast run on MXNet's Dropout (asked for, or no kernels there): the flag that draws those masks everywhere
        words.append('--mxnet-dropout')
    return ' '.join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run', help='a finetune output folder with metrics.json')
    parser.add_argument('--name', required=True, help='what the figures page calls the run')
    parser.add_argument('--note', help='what a reader should know about the run (shown with it)')
    parser.add_argument('--ran-here-today', action='store_true',
                        help='for a run whose metrics.json predates the record of its machine: it ran on this '
                             'machine today (recorded as such, with a note)')
    args = parser.parse_args()
    path = Path(args.run) / 'metrics.json'
    if not path.is_file():
        raise SystemExit(f'error: {path} does not exist: pass a finished finetune run folder')
    metrics = json.loads(path.read_text())
    if 'measured' not in metrics and args.ran_here_today:
        metrics['measured'] = {**measured(),
                               'note': 'machine recorded afterwards, on the machine and the day of the run'}
    if 'measured' not in metrics:
        raise SystemExit(f'error: {path} does not record the date and machine of its run (written before '
                         'bert_tutorial 0.3): run it again, or pass --ran-here-today if it did')
    record = {
        'name': args.name, 'command': command_of(metrics['config']),
        **{k: metrics[k] for k in ('test_accuracy', 'validation_accuracy', 'selected_epoch', 'seconds',
                                   'num_train', 'num_validation', 'num_test', 'measured')},
        'epochs': len(metrics['history']), 'note': args.note,
        'epoch_accuracies': [{k: v for k, v in h.items() if k.endswith('accuracy')} for h in metrics['history']],
    }
    if metrics.get('kernel_choice') is not None:  # which operators ran on kernels: they change the float32 round-off
        record['kernels'] = {'kernels': metrics['kernel_choice']['kernels'],
                             'decided_by': metrics['kernel_choice']['decided_by'],
                             'kernel_dropout': metrics.get('kernel_dropout')}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (re.sub(r'[^a-z0-9]+', '-', args.name.lower()).strip('-') + '.json')
    out.write_text(json.dumps(record, indent=2) + '\n')
    print(f'{out}: {record["command"]}: test accuracy {record["test_accuracy"]:.4f}')


if __name__ == '__main__':
    main()
