"""Pre-training: the model joining the tutorial's heads, example generation statistics, the loop, the command."""
import json
from collections import Counter

import gluonnlp as nlp
import mxnet as mx
import numpy as np
import pytest
from conftest import run_cli
from mxnet import autograd, gluon, nd

from bert_tutorial import BERTClassifier, get_pretrained_bert, save_model
from bert_tutorial.checkpoint import latest_checkpoint
from bert_tutorial.recipes.pretraining import BERTPretrainModel, evaluate_pretraining, pretrain_loop
from bert_tutorial.recipes.pretraining_data import (
    PretrainingDataset,
    pretraining_loader,
    read_text_corpus,
    split_sentences,
    tokenize_documents,
)
from bert_tutorial.vocab import build_vocab

TEXT = """The cat sat on the mat. It was warm! Did the dog mind? No.

A storm came over the hills. Rain fell all night. The river rose.

Markets opened higher today. Traders bought shares. Prices climbed again.

Birds sing in spring. Flowers bloom early. Bees visit them."""


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / 'corpus.txt'
    path.write_text('\n\n'.join([TEXT] * 3))
    docs = read_text_corpus(path)
    vocab = build_vocab(nlp.data.BERTBasicTokenizer(lower=True), docs, min_freq=1)
    ids = tokenize_documents(nlp.data.BERTTokenizer(vocab, lower=True), vocab, docs)
    return docs, vocab, ids


def test_sentences_and_documents(tmp_path, corpus):
    assert split_sentences('One. Two!  Three? four') == ['One.', 'Two!', 'Three?', 'four']
    docs, _, _ = corpus
    assert len(docs) == 12 and docs[0] == ['The cat sat on the mat.', 'It was warm!', 'Did the dog mind?', 'No.']
    folder = tmp_path / 'f'
    (folder / 'sub').mkdir(parents=True)
    (folder / 'a.txt').write_text('First doc. Second sentence.\n\nSame doc.')
    (folder / 'sub' / 'b.txt').write_text('Other doc.')
    assert read_text_corpus(folder) == [['First doc.', 'Second sentence.', 'Same doc.'], ['Other doc.']]
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_text_corpus(tmp_path / 'missing.txt')
    (tmp_path / 'empty.txt').write_text('  \n\n ')
    with pytest.raises(ValueError, match='holds no text'):
        read_text_corpus(tmp_path / 'empty.txt')


def test_model_shapes_and_tied_weights():
    model = BERTPretrainModel(vocab_size=40, units=16, hidden_size=32, num_heads=2, num_layers=2, dropout=0.1,
                              max_len=12)
    model.initialize()
    words = nd.random.randint(5, 40, shape=(3, 10)).astype('float32')
    segments = nd.array([[0] * 5 + [1] * 5] * 3)
    valid = nd.array([10, 8, 6])
    positions = nd.array([[1, 2], [3, 4], [5, 1]])
    X, mlm, nsp = model(words, segments, valid, positions)
    assert X.shape == (3, 10, 16) and mlm.shape == (3, 2, 40) and nsp.shape == (3, 1)
    out_layer = model.mlm.decoder[3]
    assert out_layer.weight is model.encoder.word_embed.weight  # one Parameter, two uses
    with autograd.record():
        loss = model(words, segments, valid, positions)[1].sum()
    loss.backward()
    assert np.abs(model.encoder.word_embed.weight.grad().asnumpy()).sum() > 0
    # MLM scores at a position are the decoder applied to the encoding there (gather is right).
    expected = model.mlm.decoder(X[1:2, 4:5, :]).reshape((-1,))
    # the same decoder on the same encoding, gathered two ways: float32 round-off of 16-input dense layers
    np.testing.assert_allclose(model(words, segments, valid, positions)[1][1, 1].asnumpy(), expected.asnumpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match='position 10 is out of range for a sequence of length 10'):
        model(words, segments, valid, nd.array([[1, 10], [3, 4], [5, 1]]))
    untied = BERTPretrainModel(40, 16, 32, 2, 1, 0.0, max_len=12, tie_weights=False)
    untied.initialize()
    assert untied.mlm.decoder[3].weight is not untied.encoder.word_embed.weight


def test_example_statistics(corpus):
    """15% of the positions are chosen, 80/10/10 [MASK]/random/kept, 50/50 true/random next sentence."""
    _, vocab, ids = corpus
    docs = ids * 100  # a few thousand examples
    ds = PretrainingDataset(docs, vocab, max_len=32, seed=0)
    assert len(ds) > 2000
    cls, sep, mask, pad = (vocab[t] for t in ('[CLS]', '[SEP]', '[MASK]', '[PAD]'))
    specials = {vocab[t] for t in ('[CLS]', '[SEP]', '[PAD]', '[UNK]', '[MASK]')}
    chosen = candidates = 0
    kinds = Counter()
    nsp = []
    for tokens, segments, valid_len, positions, weights, labels, is_next in ds:
        n, v = int(weights.sum()), int(valid_len)
        tokens, segments = tokens.astype(int), segments.astype(int)
        seps = np.flatnonzero(tokens == sep)
        assert tokens[0] == cls and len(seps) == 2 and seps[1] == v - 1
        assert (segments[:seps[0] + 1] == 0).all() and (segments[seps[0] + 1:v] == 1).all()
        assert (segments[v:] == 0).all() and (tokens[v:] == pad).all()
        chosen += n
        candidates += v - 3
        for p, label in zip(positions[:n].astype(int), labels[:n].astype(int)):
            assert 0 < p < v and p not in seps and label not in specials
            kinds['mask' if tokens[p] == mask else 'same' if tokens[p] == label else 'random'] += 1
        assert (weights[n:] == 0).all()
        nsp.append(is_next)
    assert abs(chosen / candidates - 0.15) < 0.01
    assert abs(kinds['mask'] / chosen - 0.8) < 0.02
    assert abs(kinds['random'] / chosen - 0.1) < 0.02
    assert abs(kinds['same'] / chosen - 0.1) < 0.02
    assert abs(np.mean(nsp) - 0.5) < 0.02


def test_examples_are_deterministic_and_cut_to_max_len(corpus):
    _, vocab, ids = corpus
    a, b = PretrainingDataset(ids, vocab, 8, seed=3), PretrainingDataset(ids, vocab, 8, seed=3)
    assert all((x == y).all() for ex1, ex2 in zip(a, b) for x, y in zip(ex1, ex2))
    c = PretrainingDataset(ids, vocab, 8, seed=4)
    assert any((x != y).any() for ex1, ex2 in zip(a, c) for x, y in zip(ex1, ex2))
    assert max(int(ex[2]) for ex in a) == 8
    with pytest.raises(ValueError, match='max_len must be >= 5'):
        PretrainingDataset(ids, vocab, 4)
    with pytest.raises(ValueError, match='at least 2 documents'):
        PretrainingDataset(ids[:1], vocab, 8)


def test_padded_prediction_slots_do_not_count(corpus):
    from bert_tutorial.recipes.pretraining import _losses
    _, vocab, ids = corpus
    ds = PretrainingDataset(ids, vocab, 24, seed=0)
    batch = next(iter(pretraining_loader(ds, 8, shuffle=False)))
    batch = [x.as_in_context(mx.cpu()) for x in batch]
    model = BERTPretrainModel(len(vocab), 16, 32, 2, 1, 0.0, max_len=24)
    model.initialize()
    mlm_fn, nsp_fn = gluon.loss.SoftmaxCELoss(), gluon.loss.SigmoidBCELoss()
    before = _losses(model, batch, mlm_fn, nsp_fn)[0].asscalar()
    weights, labels = batch[4], batch[5].copy()
    labels[:] = labels * weights + (1 - weights) * 7  # change only the padded slots' labels
    assert (weights == 0).sum().asscalar() > 0
    after = _losses(model, batch[:5] + [labels, batch[6]], mlm_fn, nsp_fn)[0].asscalar()
    # padded slots weigh exactly 0 either way: the same terms summed, rel 1e-6 only for the order of float32 sums
    assert after == pytest.approx(before, rel=1e-6)


def test_loop_learns_checkpoints_and_resumes(corpus, tmp_path, monkeypatch):
    _, vocab, ids = corpus
    train = PretrainingDataset(ids * 4, vocab, 24, seed=0)
    held = PretrainingDataset(ids, vocab, 24, seed=1)

    def run(steps, **kw):
        mx.random.seed(0)
        model = BERTPretrainModel(len(vocab), 32, 64, 2, 1, 0.1, max_len=24)
        model.initialize(mx.init.Normal(0.02))
        hist = pretrain_loop(model, pretraining_loader(train, 16, True, drop_last=True),
                             pretraining_loader(held, 16, False), steps, 2e-3, mx.cpu(), progress=False, seed=5,
                             eval_every=10, before_epoch=train.resample, **kw)
        return model, hist

    model, hist = run(40)
    assert hist[-1]['train_mlm_loss'] < hist[0]['train_mlm_loss'] - 0.25
    assert hist[-1]['mlm_loss'] < hist[0]['mlm_loss'] - 0.25
    assert {'mlm_loss', 'mlm_accuracy', 'nsp_accuracy'} <= set(hist[-1])
    full = {k: v.data().asnumpy() for k, v in model._collect_params_with_prefix().items()}

    from bert_tutorial.recipes import pretraining
    real_eval, calls = pretraining.evaluate_pretraining, []

    def killed_at_step_25(*args, **kwargs):  # the run dies between the checkpoints of steps 20 and 30
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(pretraining, 'evaluate_pretraining', killed_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        run(40, checkpoint_dir=tmp_path / 'c')
    monkeypatch.setattr(pretraining, 'evaluate_pretraining', real_eval)
    assert latest_checkpoint(tmp_path / 'c').name == 'step-00000020'
    model, hist2 = run(40, checkpoint_dir=tmp_path / 'c', resume=True)
    for k, v in model._collect_params_with_prefix().items():  # bit for bit: the resumed run replays the same steps
        np.testing.assert_array_equal(v.data().asnumpy(), full[k])
    assert [h['step'] for h in hist2] == [10, 20, 30, 40]


def test_nan_stops_and_handoff_to_finetuning(corpus, tmp_path):
    _, vocab, ids = corpus
    train = PretrainingDataset(ids, vocab, 24, seed=0)
    model = BERTPretrainModel(len(vocab), 16, 32, 2, 1, 0.0, max_len=24)
    model.initialize()
    evaluate_pretraining(model, pretraining_loader(train, 8, False), mx.cpu())
    encoder = model.to_encoder()
    save_model(tmp_path / 'p', encoder, vocab, {'model_type': 'encoder', 'encoder': encoder.config})
    bert, vocab2 = get_pretrained_bert(tmp_path / 'p', dropout=0.0)
    assert vocab2.idx_to_token == vocab.idx_to_token and bert.config == encoder.config
    words, segments, valid = nd.array([[2, 8, 9, 3]]), nd.zeros((1, 4)), nd.array([4])
    # the same parameters saved and loaded into the same operators: round-off of reordered sums at most
    np.testing.assert_allclose(bert(words, segments, valid)[0].asnumpy(),
                               model.encoder(words, segments, valid).asnumpy(), atol=1e-6)
    net = BERTClassifier(bert, 2)
    net.classifier.initialize()
    assert net(words, segments, valid).shape == (1, 2)

    model.encoder.word_embed.weight.set_data(model.encoder.word_embed.weight.data() * np.nan)
    with pytest.raises(FloatingPointError, match='non-finite (loss|gradient norm) at step 0:'):
        pretrain_loop(model, pretraining_loader(train, 8, True, drop_last=True), pretraining_loader(train, 8, False),
                      5, 1e-3, mx.cpu(), progress=False, checkpoint_dir=tmp_path / 'nan')
    assert latest_checkpoint(tmp_path / 'nan') is None


def test_folders_of_the_old_sinusoidal_encoder_are_refused(corpus, tmp_path):
    _, vocab, _ = corpus
    # What bert_tutorial 0.1's pretrain wrote: encoder.params, vocab.json and pretrain_config.json.
    (tmp_path / 'p').mkdir()
    (tmp_path / 'p' / 'vocab.json').write_text(vocab.to_json())
    (tmp_path / 'p' / 'pretrain_config.json').write_text(json.dumps({'vocab_size': len(vocab), 'units': 16,
                                                                      'scale_embed': True}))
    with pytest.raises(ValueError, match='older bert_tutorial .pretrain_config.json, an encoder with sinusoidal'):
        get_pretrained_bert(tmp_path / 'p')


@pytest.mark.slow
def test_pretrain_command_then_finetune(tmp_path):
    out = tmp_path / 'pt'
    run_cli('pretrain', '--steps', '30', '--eval-every', '15', '--batch-size', '32', '--units', '32', '--hidden', '64',
            '--out', str(out), '--no-progress')
    metrics = json.loads((out / 'metrics.json').read_text())
    for key in ('mlm_loss', 'mlm_accuracy', 'nsp_accuracy', 'mlm_baseline_accuracy'):
        assert 0 <= metrics[key] <= (20 if key == 'mlm_loss' else 1)
    assert metrics['baseline_token'] == '.'
    assert set(metrics['kernel_choice']['kernels']) == {'layer_norm', 'softmax', 'gelu', 'attention', 'dense', 'adam',
                                                        'grad_norm'} and metrics['measured']['mxnet']
    ft = tmp_path / 'ft'
    run_cli('finetune', '--model', str(out), '--max-train', '64', '--max-test', '32', '--max-len', '32', '--epochs',
            '1', '--out', str(ft), '--no-progress')
    assert json.loads((ft / 'metrics.json').read_text())['config']['model'] == str(out)


def test_wikitext_fails_fast_offline(tmp_path, monkeypatch):
    from bert_tutorial.recipes.pretraining_data import load_wikitext2
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    from d2l import mxnet as d2l
    monkeypatch.setattr(d2l, 'DATA_URL', 'http://127.0.0.1:9/')
    with pytest.raises(FileNotFoundError, match='wiki.train.tokens'):
        load_wikitext2()
