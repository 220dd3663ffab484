"""``.. public-api::``: an autodoc entry for every name in ``bert_tutorial.__all__``, in its groups.

Generated from ``__all__`` when the site builds, so a name added to the package appears here without anyone
editing the page (``tests/test_docs.py`` fails when one of them has no docstring of its own).
"""
from __future__ import annotations

import inspect

from docutils import nodes
from docutils.statemachine import StringList
from public_names import public_groups
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


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
