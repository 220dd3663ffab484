"""Execute the notebooks in full and store them with their outputs, as the site and the tests show them.

    python tools/run_notebooks.py [bert_finetuning.ipynb ...] [-p name value ...]

Each notebook runs with papermill in a temporary working folder (what it writes stays out of the repository) and
replaces ``notebooks/NAME`` only when every cell succeeded. Papermill records the input and output paths of the
run: they are rewritten to the notebook's path in the repository, so a stored notebook names no folder of the
machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / 'notebooks'


def run(name: str, parameters: list[tuple[str, str]]) -> None:
    source = NOTEBOOKS / name
    if not source.is_file():
        names = ', '.join(p.name for p in NOTEBOOKS.glob('*.ipynb'))
        raise SystemExit(f'error: {source} does not exist; one of {names}')
    with tempfile.TemporaryDirectory(prefix='bert_tutorial_nb_') as work:
        executed = Path(work) / name
        args = [sys.executable, '-m', 'papermill', str(source), str(executed), '--cwd', work, '-k', 'python3',
                '--log-output']
        for key, value in parameters:
            args += ['-p', key, value]
        print(' '.join(args), flush=True)
        if subprocess.run(args).returncode:
            raise SystemExit(f'error: {name} failed (the cell and its error are above); notebooks/{name} is unchanged')
        notebook = json.loads(executed.read_text(encoding='utf-8'))
    meta = notebook['metadata'].get('papermill', {})
    meta['input_path'] = meta['output_path'] = f'notebooks/{name}'
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + '\n'
    for path in (work, str(ROOT)):
        if path in text:
            raise SystemExit(f'error: {name} printed a path of this machine ({path}); notebooks/{name} is unchanged')
    source.write_text(text, encoding='utf-8')
    print(f'notebooks/{name}: stored with its outputs')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('names', nargs='*', default=['bert_pretraining.ipynb', 'bert_finetuning.ipynb'])
    parser.add_argument('-p', nargs=2, action='append', default=[], metavar=('NAME', 'VALUE'),
                        help='a papermill parameter (for a trial run; the stored notebooks use their defaults)')
    args = parser.parse_args()
    for name in args.names:
        run(name, [tuple(p) for p in args.p])


if __name__ == '__main__':
    main()
