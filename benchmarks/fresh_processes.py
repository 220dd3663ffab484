"""Run a benchmark script again in fresh processes, one after another, and read back the JSON each one writes.

On these VMs a process can run one variant slower for its whole life (see ``profile_step.py``), which ratios
measured within one process do not cancel: the scripts' ``--processes N`` report medians over such runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_fresh(script: str, args: list[str], results_flag: str, n: int, echo: bool) -> list[dict]:
    """The results of ``python script *args results_flag PATH`` run ``n`` times, each in a new process; with
    ``echo`` the runs print as they go (each announced), else their standard output is dropped."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n):
            if echo:
                print(f'process {k + 1} of {n}', flush=True)
            path = Path(tmp) / f'{k}.json'
            subprocess.run([sys.executable, script, *args, results_flag, str(path)], check=True,
                           stdout=None if echo else subprocess.DEVNULL)
            runs.append(json.loads(path.read_text()))
    return runs
