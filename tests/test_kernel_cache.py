"""The cached C++ library is verified before it is loaded: a damaged one (cut short, overwritten, without its
checksum) is rebuilt once, and when that fails, or the library does not load, the package falls back to MXNet's
operators with one clean log line. A "compiler" that copies this session's library stands in for g++, so that a
rebuild costs nothing; the library is loaded in a new process (a cut shared library mapped by the loader is a bus
error, which would kill pytest)."""
import logging
import os
import stat

import pytest
from test_kernels import _run_python

from bert_tutorial.speed import kernels

needs_kernels = pytest.mark.usefixtures('kernels_loaded')

LOAD = ('import logging, mxnet as mx\n'
        'logging.basicConfig(level=logging.INFO, format="%(name)s|%(levelname)s|%(message)s")\n'
        'from bert_tutorial.speed import kernels\n'
        'print(kernels.load_kernels(), hasattr(mx.nd, "bert_layer_norm"))\n')


def _fake_compiler(tmp_path, name: str, build: str) -> str:
    """A compiler that reports the real one's version (so the cache key is the same) and runs ``build`` (shell,
    with ``$out`` the ``-o`` target) in place of compiling."""
    script = tmp_path / name
    script.write_text('#!/bin/sh\n'
                      f'if [ "$1" = "--version" ]; then exec {kernels._compiler()} --version; fi\n'
                      'out=""; prev=""\n'
                      'for a in "$@"; do if [ "$prev" = "-o" ]; then out="$a"; fi; prev="$a"; done\n'
                      f'{build}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache (``home``) holding this session's library at the path the real compiler's key gives, with its
    checksum; ``good``: the library's bytes; ``copy``: a compiler that 'builds' it by copying it."""
    built = kernels.loaded_library()
    home = tmp_path / 'home'
    with monkeypatch.context() as m:
        m.setenv('MXNET_HOME', str(home))
        target = kernels.library_path(kernels._compiler())
    target.parent.mkdir(parents=True)
    good = built.read_bytes()
    target.write_bytes(good)
    kernels.checksum_path(target).write_text(kernels.sha256_file(target) + '\n')
    return {'home': home, 'target': target, 'good': good,
            'copy': _fake_compiler(tmp_path, 'copying-g++', f'exec cp {built} "$out"'),
            'fail': _fake_compiler(tmp_path, 'failing-g++', 'echo "failing-g++: cannot compile" >&2; exit 1')}


def _kernel_lines(stderr):
    return [line.split('|', 2)[1:] for line in stderr.splitlines() if line.startswith('bert_tutorial.speed.kernels|')]


@needs_kernels
def test_a_cut_library_is_rebuilt_not_loaded(cache):
    """Half of the cached library, as a killed copy or a full disk leaves it: 0.4 died of a bus error (exit 135) in
    every process; now the file fails its checksum, is rebuilt (one warning, and the build's lines) and loads."""
    cache['target'].write_bytes(cache['good'][:len(cache['good']) // 2])
    done = _run_python(LOAD, cache['home'], CXX=cache['copy'])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['True', 'True'], done.stderr
    lines = _kernel_lines(done.stderr)
    assert [level for level, _ in lines] == ['WARNING', 'INFO', 'INFO'], lines  # where it loads from: a debug line
    assert 'does not match its checksum' in lines[0][1] and 'rebuilding it' in lines[0][1]
    # said before the build starts, with how long it takes
    assert lines[1][1].startswith('bert_tutorial kernels: compiling the C++ kernels with') and '10-30 s' in lines[1][1]
    assert lines[2][1].startswith('bert_tutorial kernels: built in')
    assert cache['target'].read_bytes() == cache['good'] and kernels.verified(cache['target'])


@needs_kernels
@pytest.mark.parametrize('damage', ['overwritten', 'no checksum', 'wrong checksum'])
def test_a_damaged_library_is_rebuilt_once(cache, monkeypatch, caplog, damage):
    """``build`` (which the loading process calls first) replaces a library that fails its checksum."""
    monkeypatch.setenv('MXNET_HOME', str(cache['home']))
    if damage == 'overwritten':
        cache['target'].write_bytes(os.urandom(len(cache['good'])))
    elif damage == 'no checksum':  # a cache from 0.4, or a build killed between the library and its checksum
        kernels.checksum_path(cache['target']).unlink()
    else:
        kernels.checksum_path(cache['target']).write_text('0' * 64 + '\n')
    assert not kernels.verified(cache['target'])
    with caplog.at_level(logging.INFO, logger=kernels.__name__):
        assert kernels.build(cache['copy']) == cache['target']
        assert kernels.build(cache['copy']) == cache['target']  # verified now: not built again
    assert kernels.verified(cache['target']) and cache['target'].read_bytes() == cache['good']
    messages = [r.getMessage() for r in caplog.records]
    assert sum('does not match its checksum' in m for m in messages) == 1
    assert sum('compiling the C++ kernels' in m for m in messages) == 1
    assert not [p for p in cache['target'].parent.iterdir() if p.name.endswith(('.part', '.partial'))]  # none left


@needs_kernels
def test_when_the_rebuild_fails_mxnets_operators_run(cache):
    cache['target'].write_bytes(cache['good'][:1000])
    done = _run_python(LOAD, cache['home'], CXX=cache['fail'])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['False', 'False']
    lines = _kernel_lines(done.stderr)
    assert lines[-1] == ['WARNING', 'bert_tutorial kernels: pure MXNet operators (the C++ kernels did not build or '
                                    f'load: {cache["fail"]} failed (1): failing-g++: cannot compile)'], lines
    assert 'Traceback' not in done.stderr


@needs_kernels
def test_a_library_that_does_not_load_gives_one_clean_line(cache):
    """A file that passes its checksum but is no shared library (written so by hand): MXNet refuses it, and the
    warning is one line with the reason, not MXNet's traceback."""
    cache['target'].write_bytes(b'not a shared library\n' * 100)
    kernels.checksum_path(cache['target']).write_text(kernels.sha256_file(cache['target']) + '\n')
    done = _run_python(LOAD, cache['home'], CXX=cache['fail'])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['False', 'False']
    (level, message), = _kernel_lines(done.stderr)
    assert level == 'WARNING' and message.startswith('bert_tutorial kernels: pure MXNet operators (the C++ kernels '
                                                     'did not build or load: ')
    assert 'Traceback' not in message and '\n' not in message and 'c_api' not in message, message


@needs_kernels
def test_operator_errors_are_one_clean_line():
    """MXNet wraps an external operator's message in its own traceback, with the library's source file and line
    ([0] .../bert_kernels.cc[1247]): ``error_line`` gives the operator's message alone."""
    import mxnet as mx
    for units in (3, 5):  # the library's messages pile up in MXNet's text from call to call: the last one counts
        with pytest.raises(mx.base.MXNetError) as caught:
            mx.nd.bert_layer_norm(mx.nd.ones((2, units)), mx.nd.ones((4,)), mx.nd.ones((units,)))[0].wait_to_read()
        assert 'bert_kernels.cc[' in str(caught.value)
        assert kernels.error_line(caught.value) == f'bert_layer_norm: gamma and beta must have shape ({units},)'
    assert kernels.error_line(OSError('first\n\nlast line')) == 'last line'


@needs_kernels
def test_first_build_is_announced_by_the_command_line(cache):
    """``python -m bert_tutorial download`` on a machine without the library: the command's log shows, before the
    build, what it does and how long it takes; then the build, the library and the choice."""
    from bert_tutorial.recipes.hub import builtin_checkpoint_dir

    kernels.checksum_path(cache['target']).unlink()
    cache['target'].unlink()
    model = builtin_checkpoint_dir()
    (cache['home'] / 'bert_tutorial' / model.name).symlink_to(model)  # no refetch
    done = _run_python('import sys\nfrom bert_tutorial import cli\nsys.exit(cli.main(["download"]))', cache['home'],
                       CXX=cache['copy'], BERT_TUTORIAL_KERNEL_CHOICE='all')  # 'all': nothing to time
    assert done.returncode == 0, done.stderr
    log = [line.split(' ', 1)[1] for line in done.stderr.splitlines() if 'bert_tutorial.speed' in line]
    assert log[0].startswith(f'INFO bert_tutorial.speed.kernels: bert_tutorial kernels: compiling the C++ kernels '
                             f'with {cache["copy"]} (once per machine, MXNet version and compiler; 10-30 s on 2 '
                             f'cores) into {cache["target"].parent}'), log
    assert log[1].startswith('INFO bert_tutorial.speed.kernels: bert_tutorial kernels: built in')
    assert 'C++ kernels: C++ kernels for layer_norm, softmax, gelu, attention' in done.stdout  # dense: where a BLAS is
    assert kernels.verified(cache['target'])
