"""``{results-table} NAME``: a table of measured figures read from ``benchmarks/results/`` when the site builds.

The figures page never copies a number by hand: each table is built from the JSON that a benchmark or a recorded
run wrote, with the date and the machine it was measured on.
"""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.errors import ExtensionError

RESULTS = Path(__file__).resolve().parents[2] / 'benchmarks' / 'results'


def _load(name: str) -> dict:
    path = RESULTS / name
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise ExtensionError(f'results-table: cannot read {path}: {err}') from err


def _machine(result: dict) -> str:
    m = result.get('measured')
    if not m:
        return 'date and machine not recorded'
    flags = ', '.join(m.get('flags', [])) or 'none of the listed'
    note = f"; {m['note']}" if m.get('note') else ''
    return f"measured {m['date']} on {m['cores']} cores of {m['cpu']} (flags: {flags}{note})"


def _table(headers: list[str], rows: list[list[str]]) -> nodes.table:
    table = nodes.table(classes=['results'])
    group = nodes.tgroup(cols=len(headers))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in headers)

    def row(cells):
        r = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=str(cell))
            r += entry
        return r

    head = nodes.thead()
    head += row(headers)
    body = nodes.tbody()
    body.extend(row(r) for r in rows)
    group += head
    group += body
    return table


def _accuracy() -> tuple[list[str], list[list[str]], list[str]]:
    rows, notes = [], []
    for path in sorted((RESULTS / 'runs').glob('*.json')):
        run = _load(f'runs/{path.name}')
        val = run.get('validation_accuracy')
        rows.append([run['name'], f"{run['test_accuracy']:.4f}", f'{val:.4f}' if val is not None else '-',
                     f"{run['selected_epoch']} (of 0-{run['epochs'] - 1})", f"{run['seconds'] / 60:.1f} min",
                     run['measured']['date']])
        note = f" {run['note']}" if run.get('note') else ''
        notes.append(f"{run['name']}: `{run['command']}`; {run['num_train']} training, {run['num_validation']} "
                     f"validation, {run['num_test']} test snippets; {_machine(run)}.{note}")
    tfidf = _load('tfidf_baseline.json')
    rows.append(['TF-IDF + logistic regression', f"{tfidf['test_accuracy']:.4f}", '-', '-',
                 f"{tfidf['seconds']:.1f} s", tfidf.get('measured', {}).get('date', 'not recorded')])
    notes.append(f"TF-IDF: `python benchmarks/tfidf_baseline.py`; {tfidf['num_train']} training, "
                 f"{tfidf['num_test']} test snippets; {_machine(tfidf)}.")
    return ['run', 'test accuracy', 'validation accuracy', 'kept epoch', 'time', 'date'], rows, notes


def _training_speed() -> tuple[list[str], list[list[str]], list[str]]:
    r = _load('finetune.json')
    runs = r.get('full_runs', {})

    def accuracy(name):
        return f"{runs[name]['test_accuracy']:.4f}" if name in runs else '-'

    version = r.get('bert_tutorial_version', 'before 0.3')
    rows = [['tutorial pipeline', f"{r['tutorial_samples_per_second']:.1f}", '1.00x', accuracy('tutorial')],
            [f'default pipeline ({version})', f"{r['samples_per_second']:.1f}", f"{r['speedup_vs_tutorial']:.2f}x",
             accuracy('default')]]
    if r.get('pytorch_samples_per_second'):
        rows.append(['Hugging Face + PyTorch, same batches', f"{r['pytorch_samples_per_second']:.1f}",
                     f"{r['pytorch_samples_per_second'] / r['tutorial_samples_per_second']:.2f}x", '-'])
    notes = [f"`python benchmarks/bench_finetune.py`: batch {r['batch_size']}, {r['examples']} snippets, "
             f"{r['rounds']} interleaved rounds, {r['threads']} threads; {_machine(r)}.",
             f"The default pipeline reaches {r['gflops']:.0f} GFLOP/s of matrix products, "
             f"{r['gflops_fraction_of_peak']:.0%} of the {r['matmul_peak_gflops']:.0f} GFLOP/s float32 matmul peak "
             f"measured in the same run."]
    if runs:
        notes.append('Test accuracy: the full 3-epoch runs (' + ', '.join(
            f"`{v['run']}`" for v in runs.values()) + ') that the benchmark read when it ran.')
    if r.get('defaults'):
        notes.append(f"Defaults: {r['defaults']}.")
    return ['pipeline', 'samples/s', 'vs tutorial', 'test accuracy of a full run'], rows, notes


VARIANTS = {'float32': 'float32 BERTClassifier, sentences in the order given',
            'float32-sorted': 'the same, sorted by length', 'exported': 'exported SymbolBlock, float32',
            'fused': 'fused (masked softmax + oneDNN), float32', 'int8': 'INT8',
            'int8-sorted': 'INT8, sorted by length'}


def _prediction() -> tuple[list[str], list[list[str]], list[str]]:
    r = _load('predict.json')
    rows = []
    for key, variant in r['variants'].items():
        latency = variant.get('latency_ms_median')
        rows.append([VARIANTS.get(key, key), f"{variant['sentences_per_second']:.1f}",
                     f'{latency:.1f} ms' if latency is not None else '-', f"{variant['accuracy']:.4f}",
                     f"{variant['agreement_with_float32']:.1%}"])
    notes = [f"`python benchmarks/bench_predict.py`: {r['test_sentences']} test snippets, batch {r['batch_size']}, "
             f"{r['rounds']} rounds; {_machine(r)}.",
             f"INT8 is {r['int8_speedup']:.2f}x the float32 throughput ({r['int8_sorted_speedup']:.2f}x sorted), "
             f"{100 * r['int8_accuracy_drop']:.2f} points less accurate; {r['int8_dense_layers']} of "
             f"{r['dense_layers']} dense layers run in INT8."]
    if r.get('defaults'):
        notes.append(f"The classifier is the default model of the day; defaults {r['defaults']}.")
    return ['variant', 'sentences/s', 'one sentence', 'test accuracy', 'agrees with float32'], rows, notes


def _profile() -> tuple[list[str], list[list[str]], list[str]]:
    r = _load('profile.json')
    ops, variants = r['operators'], list(r['operators'])
    ranked = sorted({op for v in variants for op in ops[v]}, key=lambda op: -max(ops[v].get(op, 0.0) for v in variants))
    rows = [[op] + [f'{ops[v].get(op, 0.0):.1f}' for v in variants] for op in ranked[:14]]
    outside = r['outside_fully_connected_ms']
    rows.append(['outside FullyConnected'] + [f'{outside[v]:.1f}' for v in variants])
    steps = r['step_ms']
    rows.append(['step, unprofiled'] + ['/'.join(f'{ms:.0f}' for ms in steps[v]) for v in variants])
    base = variants[0]
    notes = [f"`python benchmarks/profile_step.py --json benchmarks/results/profile.json`: milliseconds per training "
             f"step by operator, on the {len(r['batch_shapes'])} batches with the most tokens "
             f"({', '.join('x'.join(map(str, s)) for s in r['batch_shapes'])}), {r['rounds']} rounds with the variants "
             f"interleaved; {_machine(r)}."]
    notes += [f"{base} / {v}: step time " + ', '.join(f'{b / o:.2f}' for b, o in zip(steps[base], steps[v]))
              + f" per round; time outside FullyConnected {outside[base] / outside[v]:.2f}x less"
              + (' (process by process: ' + ', '.join(f'{p[base] / p[v]:.2f}x' for p in r['processes']) + ')'
                 if r.get('processes') else '') + '.'
              for v in variants[1:]]
    if r.get('processes'):
        notes.insert(1, f"Run in {len(r['processes'])} fresh processes (`--processes {len(r['processes'])}`): each "
                        "operator's time is the median over processes; the step times list every round of every "
                        "process.")
    return ['operator'] + variants, rows, notes


TABLES = {'accuracy': _accuracy, 'training-speed': _training_speed, 'prediction': _prediction, 'profile': _profile}


class ResultsTable(Directive):
    required_arguments = 1

    def run(self):
        name = self.arguments[0]
        if name not in TABLES:
            raise self.error(f'results-table: unknown table {name!r}; one of {", ".join(TABLES)}')
        headers, rows, notes = TABLES[name]()
        env = self.state.document.settings.env
        for path in RESULTS.rglob('*.json'):  # rebuild the page when a result changes
            env.note_dependency(str(path))
        out = [_table(headers, rows)]
        for note in notes:
            paragraph = nodes.paragraph()
            # `...` in a note is a command: shown as code.
            for i, part in enumerate(note.split('`')):
                paragraph += nodes.literal(text=part) if i % 2 else nodes.Text(part)
            out.append(paragraph)
        return out


def setup(app):
    app.add_directive('results-table', ResultsTable)
    return {'version': '1', 'parallel_read_safe': True}
