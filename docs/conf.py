"""Sphinx configuration: ``python -m sphinx -W -b html docs docs/_build/html`` builds the site offline."""
import shutil
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / '_ext'))
sys.path.insert(0, str(ROOT))
# mxnet 1.9.1 under numpy 1.23 warns at import (np.bool, distutils); autodoc imports it.
warnings.filterwarnings('ignore', category=DeprecationWarning)

# The notebooks live in notebooks/ (where the tests and Jupyter use them); the site renders copies of their
# stored outputs, refreshed on every build so the pages never lag behind the files.
(DOCS / 'notebooks').mkdir(exist_ok=True)
for notebook in sorted((ROOT / 'notebooks').glob('*.ipynb')):
    shutil.copyfile(notebook, DOCS / 'notebooks' / notebook.name)

import bert_tutorial  # noqa: E402

project = 'bert_tutorial'
author = 'the bert_tutorial developers'
copyright = '2026, the bert_tutorial developers'
release = version = bert_tutorial.__version__

extensions = [
    'myst_nb',
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
    'sphinxarg.ext',
    'bt_figures',
    'bt_api',
]
exclude_patterns = ['_build', 'check_site_screenshots', 'README.md']
source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb', '.ipynb': 'myst-nb'}

# The notebooks are shown as they were executed (a full run takes 20 minutes); nothing runs at build time.
nb_execution_mode = 'off'
# Log lines printed one by one are shown as one block, as Jupyter shows them.
nb_merge_streams = True
# No widget JavaScript from a CDN: the site must work offline.
nb_ipywidgets_js = {}
myst_enable_extensions = ['colon_fence']
# Flags stay as typed: Sphinx's smartquotes would print `--train` in running text as an en dash (and straight quotes
# as curly ones), which a shell does not accept when copied. docs/check_site.py fails on a dash before a flag name.
smartquotes = False
myst_heading_anchors = 3

autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_default_options = {'members': False}

html_theme = 'furo'
html_title = f'bert_tutorial {release}'
html_static_path = ['_static']
html_css_files = ['site.css']


html_favicon = '_static/favicon.svg'
