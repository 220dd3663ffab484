"""``.. public-api::``: an autodoc entry for every name in ``bert_tutorial.__all__``, in its groups.

Generated from ``__all__`` when the site builds, so a name added to the package appears here without anyone
editing the page (``tests/test_docs.py`` fails when one of them has no docstring of its own).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


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


class PublicAPI(SphinxDirective):
    def run(self):
        import bert_tutorial
        lines = []
        for title, names in public_groups():
            lines += [title[0].upper() + title[1:], '-' * len(title), '']
            for name in names:
                obj = getattr(bert_tutorial, name)
                kind = 'autoclass' if inspect.isclass(obj) else 'autofunction'
                lines += [f'.. {kind}:: bert_tutorial.{name}']
                if kind == 'autoclass':
                    lines += ['   :members:']
                lines += ['']
        section = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source='bert_tutorial.__all__'), section)
        return section.children


def setup(app):
    app.add_directive('public-api', PublicAPI)
    return {'version': '1', 'parallel_read_safe': True}
