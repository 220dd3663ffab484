"""The site's sources: every public name documented, the notebooks free of machine paths, the layout table
complete, and the commands that the figures page shows reproducing their runs."""
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

import bert_tutorial
from bert_tutorial.cli import build_parser
from bert_tutorial.recipes.finetuning import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'docs' / '_ext'))
sys.path.insert(0, str(ROOT / 'benchmarks'))


def own_docstring(obj) -> str:
    """The docstring ``obj`` itself defines: not one inherited from a base class, nor the signature that
    ``dataclass`` writes for a class without one."""
    doc = obj.__dict__.get('__doc__') if inspect.isclass(obj) else obj.__doc__
    if not doc or (inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + '(')):
        return ''
    return doc.strip()


@pytest.mark.parametrize('name', bert_tutorial.__all__)
def test_every_public_name_has_a_docstring(name):
    obj = getattr(bert_tutorial, name)
    assert own_docstring(obj), f'bert_tutorial.{name} has no docstring of its own: the API reference would be empty'
    if inspect.isclass(obj):
        for member, value in vars(obj).items():
            if inspect.isfunction(value) and not member.startswith('_') and member not in (
                    'forward', 'hybrid_forward'):
                assert own_docstring(value), f'bert_tutorial.{name}.{member} has no docstring'


def test_own_docstring_catches_what_sphinx_does_not_warn_about():
    @dataclasses.dataclass
    class Bare:
        x: int = 0

    class Inherits(Bare):
        pass

    assert own_docstring(Bare) == '' and own_docstring(Inherits) == ''
    assert own_docstring(bert_tutorial.FinetuneConfig).startswith('Everything')


def test_api_page_lists_every_public_name_once():
    from public_names import public_groups
    listed = [n for _, names in public_groups() for n in names]
    assert sorted(listed) == sorted(bert_tutorial.__all__) and len(set(listed)) == len(listed)


MACHINE_PATH = re.compile(r'(/work/|/root/|/home/|/tmp/|/private/var/|C:\\\\Users)')


@pytest.mark.parametrize('notebook', sorted((ROOT / 'notebooks').glob('*.ipynb')), ids=lambda p: p.name)
def test_stored_notebooks_hold_no_machine_paths(notebook):
    hits = sorted(set(MACHINE_PATH.findall(notebook.read_text(encoding='utf-8'))))
    assert not hits, f'{notebook.name} stores paths of the machine it ran on: {hits} (run tools/run_notebooks.py)'


def test_layout_table_lists_every_module():
    page = (ROOT / 'docs' / 'classes.md').read_text(encoding='utf-8')
    from bert_tutorial._aliases import MOVED  # 0.5's paths, kept until 0.7: named in CHANGELOG.md, not in the layout
    aliases = {old.replace('.', '/') + '.py' for old in MOVED}
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'bert_tutorial').rglob('*.py')
                     if p.name not in ('__init__.py', '__main__.py') and '__pycache__' not in p.parts
                     and p.relative_to(ROOT).as_posix() not in aliases)
    missing = [m for m in modules if f'`{m}`' not in page and f'`{Path(m).parent.as_posix()}/`' not in page
               and not (m.startswith('bert_tutorial/commands/') and '`commands/`' in page)]
    assert not missing, f'docs/classes.md (Layout) does not describe {missing}'


def test_recorded_command_reproduces_the_run_config():
    from record_run import command_of
    config = FinetuneConfig(validation_fraction=0.1, select='best', epochs=4, lr=3e-5, bucket=False,
                            freeze_word_embed=True, text_pair_column='b', out='elsewhere')
    command = command_of(dataclasses.asdict(config))
    words = command.split()
    assert words[:4] == ['python', '-m', 'bert_tutorial', 'finetune']
    args = build_parser().parse_args(words[3:])
    rebuilt = FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)})
    assert dataclasses.replace(rebuilt, out=config.out) == config
    assert command_of(dataclasses.asdict(FinetuneConfig())) == 'python -m bert_tutorial finetune'
    # as finetune records a run: kernel_dropout as it ran (not a flag); --no-fast (a flag pair) when given
    for fast in (True, False):
        recorded = dict(dataclasses.asdict(FinetuneConfig(fast=fast)), kernel_dropout=fast)
        assert command_of(recorded) == 'python -m bert_tutorial finetune' + ('' if fast else ' --no-fast')
        args = build_parser().parse_args(command_of(recorded).split()[3:])
        assert FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)}) == \
            FinetuneConfig(fast=fast)
    # a fast run on MXNet's Dropout (--mxnet-dropout, or no kernels there): the flag that draws those masks again
    recorded = dict(dataclasses.asdict(FinetuneConfig()), kernel_dropout=False)
    assert command_of(recorded) == 'python -m bert_tutorial finetune --mxnet-dropout'


@pytest.mark.parametrize('path', sorted((ROOT / 'benchmarks' / 'results').rglob('*.json')),
                         ids=lambda p: p.relative_to(ROOT / 'benchmarks' / 'results').as_posix())
def test_every_result_records_when_and_where_it_was_measured(path):
    measured = json.loads(path.read_text())['measured']
    assert re.fullmatch(r'\d{4}-\d\d-\d\d', measured['date']) and measured['cpu'] and measured['cores'] >= 1


def test_site_check_reports_what_a_reader_would_see_broken(tmp_path):
    sys.path.insert(0, str(ROOT / 'docs'))
    import check_site
    if not (check_site._find(check_site.BROWSERS) and check_site._find(check_site.DRIVERS)):
        pytest.skip('chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)')
    pytest.importorskip('selenium')
    site = tmp_path / 'site'
    (site / 'notebooks').mkdir(parents=True)
    (site / 'index.html').write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><article><h1 id="top">x</h1>'
        '<a href="notebooks/bert_finetuning.html#plot">ok</a> <a href="missing.html">broken</a> '
        '<a href="index.html#nowhere">no anchor</a> <img src="gone.png"></article></body></html>')
    svg = (ROOT / 'docs' / '_static' / 'favicon.svg').read_bytes()
    (site / 'notebooks' / 'plot.svg').write_bytes(svg)
    (site / 'notebooks' / 'bert_finetuning.html').write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><article><div id="plot">'
        '<img src="plot.svg" width="64"></div></article></body></html>')
    problems = check_site.check(site, tmp_path / 'shots')
    assert any('broken link to missing.html' in p for p in problems)
    assert any('missing anchor: index.html#nowhere' in p for p in problems)
    assert any('image did not load: gone.png' in p for p in problems)
    assert not any('bert_finetuning' in p for p in problems), problems
    assert (tmp_path / 'shots' / 'landing.png').stat().st_size > 0
    assert (tmp_path / 'shots' / 'finetuning_training_plot.png').stat().st_size > 0


def test_flags_keep_their_double_dash_on_the_site(tmp_path):
    """docs/conf.py turns Sphinx's smartquotes off; with it on, a page renders `--train` as "–train", which
    check_site's dash check reports (and "10--26" as a range, which it leaves alone)."""
    import ast

    conf = ast.parse((ROOT / 'docs' / 'conf.py').read_text())
    settings = {target.id: ast.literal_eval(node.value) for node in conf.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name) and target.id == 'smartquotes'}
    assert settings == {'smartquotes': False}
    # The rest builds pages: with the docs extra (.ci/run installs it and then checks the real site the same way).
    build_main = pytest.importorskip('sphinx.cmd.build', reason='sphinx is in the docs extra').build_main
    sys.path.insert(0, str(ROOT / 'docs'))
    import check_site
    found = {}
    for smart in (True, False):
        src, out = tmp_path / f'src-{smart}', tmp_path / f'site-{smart}'
        src.mkdir()
        (src / 'conf.py').write_text(f'smartquotes = {smart}\n')
        (src / 'index.rst').write_text('Flags\n=====\n\nRun it with --train mine.csv and --warmup-ratio 0.1 '
                                       '(10--26 s; a --- b).\n')
        assert build_main(['-q', '-b', 'html', str(src), str(out)]) == 0
        found[smart] = check_site.dashed_flags(out)
    assert found[False] == []
    assert [p.split(': ')[1].split('"')[1] for p in found[True]] == ['\u2013train', '\u2013warmup-ratio']
    assert all(p.startswith('index.html: ') and 'an en dash before a flag name' in p for p in found[True])
