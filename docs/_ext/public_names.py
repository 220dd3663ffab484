"""The public names of ``bert_tutorial`` in the commented groups of its ``__all__``: what the API page lists.

Kept apart from the Sphinx directive so that the tests can read it without Sphinx installed.
"""
from __future__ import annotations

import re
from pathlib import Path


def public_groups() -> list[tuple[str, list[str]]]:
    """``[(group title, [names])]`` from the commented groups of ``__all__`` in ``bert_tutorial/__init__.py``."""
    import bert_tutorial
    source = Path(bert_tutorial.__file__).read_text(encoding='utf-8')
    block = source[source.index('__all__'):]
    block = block[:block.index(']') + 1]
    groups: list[tuple[str, list[str]]] = []
    for line in block.splitlines()[1:]:
        comment = re.match(r'\s*#\s*(.+)', line)
        if comment:
            groups.append((comment.group(1).strip(), []))
            continue
        names = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", line)
        if names:
            if not groups:
                groups.append(('other', []))
            groups[-1][1].extend(names)
    listed = [n for _, names in groups for n in names]
    if sorted(listed) != sorted(bert_tutorial.__all__):
        raise RuntimeError('public-api: could not read the groups of bert_tutorial.__all__')
    return groups
