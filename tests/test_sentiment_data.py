import tarfile
import time

import gluonnlp as nlp
import numpy as np
import pytest

from bert_tutorial.recipes import sentiment_data as data


def _make_aclimdb(root):
    reviews = {('train', 'pos'): [('0_9', 'A wonderful film.'), ('1_7', 'Quite good.')],
               ('train', 'neg'): [('2_1', 'Awful.'), ('3_4', 'Not great.')],
               ('test', 'pos'): [('4_10', 'Best ever.')], ('test', 'neg'): [('5_2', 'Dull.')]}
    for (split, pol), items in reviews.items():
        folder = root / 'aclImdb' / split / pol
        folder.mkdir(parents=True)
        for name, text in items:
            (folder / f'{name}.txt').write_text(text)
    return root


def test_local_aclimdb_folder_archive_and_env(tmp_path, monkeypatch):
    root = _make_aclimdb(tmp_path / 'a')
    train = data.load_imdb('train', root)
    assert sorted(map(tuple, train)) == [('A wonderful film.', 9), ('Awful.', 1), ('Not great.', 4),
                                         ('Quite good.', 7)]
    assert sorted(data.transform_label(x)[1] for x in train) == [0, 0, 1, 1]
    assert data.load_imdb('test', root / 'aclImdb') == [['Best ever.', 10], ['Dull.', 2]]

    archive_dir = tmp_path / 'b'
    archive_dir.mkdir()
    with tarfile.open(archive_dir / 'aclImdb_v1.tar.gz', 'w:gz') as tar:
        tar.add(root / 'aclImdb', arcname='aclImdb')
    monkeypatch.setenv(data.IMDB_ENV, str(archive_dir))
    assert sorted(map(tuple, data.load_imdb('test'))) == [('Best ever.', 10), ('Dull.', 2)]


def test_wrong_layout_and_offline_imdb(tmp_path, monkeypatch):
    (tmp_path / 'aclImdb' / 'train' / 'pos').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='neg is missing'):
        data.load_imdb('train', tmp_path)
    with pytest.raises(FileNotFoundError, match='holds neither aclImdb/ nor aclImdb_v1.tar.gz'):
        data.load_imdb('train', tmp_path / 'aclImdb' / 'train')
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_imdb('dev', tmp_path)
    monkeypatch.delenv(data.IMDB_ENV, raising=False)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('MXNET_GLUON_REPO', 'https://127.0.0.1:9/')
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match='aclImdb_v1.tar.gz') as err:
        data.load_imdb('train')
    assert time.monotonic() - start < 10 and data.IMDB_ENV in str(err.value)


def test_movie_review_split_is_by_movie_and_seeded():
    by_movie = data._labelled_by_movie()
    movies = data.split_movies(by_movie, seed=0)
    assert not set(movies['train']) & set(movies['test'])
    assert set(movies['train']) | set(movies['test']) == set(by_movie)
    train, test = data.load_movie_reviews('train'), data.load_movie_reviews('test')
    assert test == [x for m in movies['test'] for x in by_movie[m]]
    assert train == [x for m in movies['train'] for x in by_movie[m]]
    assert len(train) + len(test) == 12808  # 7,403 fresh + 5,405 rotten, plot rows dropped
    assert sum(label for _, label in train + test) == 7403
    assert 0.15 < len(test) / 12808 < 0.25
    assert data.load_movie_reviews('test', seed=0) == test
    assert data.load_movie_reviews('test', seed=1) != test


def test_transform_and_batchify(tiny_vocab):
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    t = data.SentimentTransform(tok, max_len=5)
    ids, length, segments, label = t('The movie was GREAT fun', 1)
    # [CLS] the movie was [SEP]: cut to max_len
    assert list(ids) == [2, 12, 11, 16, 3] and length == 5 and label == 1 and not segments.any()
    with pytest.raises(ValueError, match=r'label must be a class index in \[0, 2\), got 2'):
        t('good', 2)
    pair = data.SentimentTransform(tok, max_len=16, pair=True, num_classes=3)
    ids, length, segments, label = pair('good fun', 'a dull plot', 2)
    # [CLS] good fun [SEP] a dull plot [SEP]: segment 0 for the first text, 1 for the second
    assert list(segments) == [0, 0, 0, 0, 1, 1, 1, 1] and length == 8 and label == 2
    with pytest.raises(ValueError, match='a pair transform needs text and text_pair'):
        pair('good fun')
    with pytest.raises(ValueError, match='text must be a string'):
        t(None, 0)
    with pytest.raises(ValueError, match='max_len must be an integer >= 3'):
        data.SentimentTransform(tok, max_len=2)
    batch = data.batchify_fn(tiny_vocab['[PAD]'])([t('good', 1), t('the movie was dull', 0)])
    ids, valid, segs, labels = (x.asnumpy() for x in batch)
    assert ids.shape == (2, 5) and list(valid) == [3, 5] and ids[0, 3:].tolist() == [0, 0]
    assert segs.max() == 0 and labels.tolist() == [1, 0]


def test_bucketed_loader_covers_every_example_once(tiny_vocab):
    from conftest import toy_reviews
    tok = nlp.data.BERTTokenizer(tiny_vocab, lower=True)
    examples = toy_reviews(100)
    np.random.seed(0)
    loader = data.sentiment_loader(examples, tok, tiny_vocab, max_len=16, batch_size=8, shuffle=True, bucket=True)
    labels = sorted(int(x) for batch in loader for x in batch[3].asnumpy())
    assert labels == sorted(label for _, label in examples)
    padded = sum(b[0].shape[0] * b[0].shape[1] for b in loader)
    real = sum(b[1].asnumpy().sum() for b in loader)
    assert real / padded > 0.8  # bucketing keeps padding low
    with pytest.raises(ValueError, match='examples is empty'):
        data.sentiment_loader([], tok, tiny_vocab)


def test_subset_is_seeded():
    xs = list(range(100))
    assert data.subset(xs, 10, seed=1) == data.subset(xs, 10, seed=1) != data.subset(xs, 10, seed=2)
    assert data.subset(xs, None) == xs and len(data.subset(xs, 10)) == 10
