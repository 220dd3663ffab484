import random
import shutil

import mxnet as mx
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    mx.random.seed(0)


WORDS = ['good', 'great', 'fun', 'bad', 'dull', 'awful', 'movie', 'the', 'a', 'plot', 'is', 'was']


@pytest.fixture(scope='session')
def kernels_loaded():
    """The package's C++ kernels, built and loaded: a machine with a compiler must get them (a failed build fails
    here); skips where there is no compiler or they are switched off (the fallback tests cover those machines)."""
    from bert_tutorial.speed import kernels
    if not kernels.kernels_enabled() or kernels._compiler() is None:
        pytest.skip('no C++ compiler, or BERT_TUTORIAL_KERNELS=off: the fallback tests cover this machine')
    assert kernels.load_kernels(), 'the C++ kernels did not build or load (see the log)'


@pytest.fixture
def tiny_vocab():
    import gluonnlp as nlp
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS
    return nlp.vocab.BERTVocab(nlp.data.count_tokens(tokens), token_to_idx={t: i for i, t in enumerate(tokens)})


def tiny_bert_config(vocab_size, **changes):
    """The config of a 1-layer, 16-unit GluonNLP BERT (``encoders``' contract), with ``changes``."""
    return dict({'model_type': 'gluonnlp_bert', 'vocab_size': vocab_size, 'units': 16, 'hidden_size': 32,
                 'num_heads': 2, 'num_layers': 1, 'max_len': 128, 'dropout': 0.0, 'type_vocab_size': 2,
                 'layer_norm_eps': 1e-12}, **changes)


@pytest.fixture
def tiny_bert(tiny_vocab):
    """A random 1-layer GluonNLP BERT over ``tiny_vocab``, built the way every pre-trained BERT is built."""
    from bert_tutorial import build_encoder
    return build_encoder(tiny_bert_config(len(tiny_vocab)))


def toy_reviews(n, seed=0):
    """Sentences whose label is whether a positive word appears: learnable by a tiny model."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        key = rng.choice(WORDS[:3] if label else WORDS[3:6])
        filler = [rng.choice(WORDS[6:]) for _ in range(rng.randint(1, 6))]
        filler.insert(rng.randint(0, len(filler)), key)
        out.append((' '.join(filler), label))
    return out


@pytest.fixture
def tiny_encoder_dir(tiny_bert, tiny_vocab, tmp_path):
    """A folder holding the random 1-layer BERT as a saved encoder: ``FinetuneConfig(model=...)`` fine-tunes it end
    to end in a few seconds, with no download."""
    from bert_tutorial import save_model
    return save_model(tmp_path / 'tiny-encoder', tiny_bert, tiny_vocab,
                      {'model_type': 'encoder', 'encoder': tiny_bert.config})


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """A Hugging Face folder of a 2-layer, 8-unit BERT over the toy vocabulary (dropout 0.1), for ``--model``: runs
    about checkpoints and settings, which any model shows, at a fraction of the cost."""
    from test_hub import CONFIG, _tensors, _write

    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *WORDS]
    config = dict(CONFIG, vocab_size=len(vocab), max_position_embeddings=64)
    return str(_write(tmp_path_factory.mktemp('tiny') / 'model', config, _tensors(config, np.random.default_rng(0)),
                      vocab))


def write_reviews(path, n, seed=0, labels=('negative', 'positive')):
    """``toy_reviews`` as a labelled CSV file (``text,label``) with the class names ``labels``."""
    import csv
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['text', 'label'])
        writer.writerows((text, labels[label]) for text, label in toy_reviews(n, seed))
    return path


def share_kernel_cache(home):
    """Give a new ``MXNET_HOME`` folder this session's C++ kernel cache (a link), so that a process started with it
    loads the library instead of compiling it again: one build per test session."""
    from bert_tutorial.speed import kernels
    assert kernels.load_kernels(), 'the C++ kernels did not build or load (see the log)'
    source = kernels.loaded_library().parent
    target = home / 'bert_tutorial' / 'kernels' / source.name
    target.mkdir(parents=True)
    for path in source.iterdir():  # the library linked; the cached choice copied: a process that measures it again
        if path.name == 'choice.json':  # (another thread count) writes its own, not the user's
            shutil.copyfile(path, target / path.name)
        elif path.name != '.lock':
            (target / path.name).symlink_to(path)


def run_cli(*args, stdin=None, check=True):
    """``python -m bert_tutorial ARGS`` in this process (``cli.main``; ``stdin`` its standard input): a
    ``CompletedProcess`` with its exit code, standard output and standard error."""
    import contextlib
    import io
    import subprocess
    import sys

    from bert_tutorial.cli import main
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or '')
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    finally:
        sys.stdin = saved
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f'exit {code}\n{proc.stdout}\n{proc.stderr}')
    return proc
