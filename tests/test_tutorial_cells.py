"""The tutorial's cells n=3, n=5 and n=7, with the package's classes, print what the tutorial printed."""
import subprocess
import sys
import textwrap

CELLS = textwrap.dedent('''
    from mxnet import gluon, nd
    from bert_tutorial import BERTEncoder, NSClassifier, MLMDecoder

    encoder = BERTEncoder(vocab_size=30000, units=768, hidden_size=3072,
                          num_heads=12, num_layers=12, dropout=0.1)
    encoder.initialize()
    num_samples, num_words = 2, 8
    words = nd.random.randint(low=0, high=30000, shape=(num_samples, num_words))
    segments = nd.array([[0,0,0,0,1,1,1,1],[0,0,0,1,1,1,1,1]])
    encodings = encoder(words, segments, None)
    print(encodings.shape)

    ns_classifier = NSClassifier()
    ns_classifier.initialize()
    ns_pred = ns_classifier(encodings)
    ns_label = nd.array([0, 1])
    ns_loss_fn = gluon.loss.SigmoidBinaryCrossEntropyLoss()
    ns_loss = ns_loss_fn(ns_pred, ns_label).mean()
    print(ns_pred.shape, ns_loss.shape)

    decoder = MLMDecoder(vocab_size=30000, units=768)
    decoder.initialize()
    mlm_positions = nd.array([[0,1],[4,7]])  # the tutorial's [4,8] is past the end of an 8-token sequence
    mlm_label = nd.array([100, 200])
    mlm_pred = decoder(encodings, mlm_positions)
    mlm_loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    mlm_loss = mlm_loss_fn(mlm_pred, mlm_label).mean()
    print(mlm_pred.shape, mlm_loss.shape)
''')


def test_tutorial_cells_print_the_tutorial_shapes():
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', CELLS], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ['(2, 8, 768)', '(2, 1) (1,)', '(2, 30000) (1,)']


def test_utils_imports_as_the_tutorial_does():
    code = ('from bert_tutorial.utils import PositionalEncoding, MultiHeadAttention, AddNorm, PositionWiseFFN, '
            'EncoderBlock; from bert_tutorial import BERTEncoder, NSClassifier, MLMDecoder, BERTClassifier')
    subprocess.run([sys.executable, '-W', 'ignore', '-c', code], check=True)
