"""The notebooks: valid, stored outputs that the current code still produces, and they run end to end."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / 'notebooks'
SMALL = {
    'bert_pretraining.ipynb': {'pretrain_steps': 20, 'pretrain_units': 32, 'pretrain_layers': 1, 'eval_every': 10},
    'bert_finetuning.ipynb': {'num_epoch': 1, 'max_train': 64, 'max_test': 32, 'max_len': 32},
}


def stored_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get('outputs', []):
            parts.append(out.get('text', ''))
            parts.append(out.get('data', {}).get('text/plain', ''))
            parts.append(out.get('evalue', ''))
    return '\n'.join(parts)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_valid_with_parameters_cell_and_stored_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == 'python3'
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1 and all(f'{k} =' in tagged[0].source for k in SMALL[name])
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.get('execution_count') for c in code), 'store the notebook executed (outputs from a full run)'
    assert not [o for c in code for o in c.outputs if o.output_type == 'error']


def test_pretraining_outputs_match_the_code():
    from mxnet import nd

    from bert_tutorial import BERTEncoder, MLMDecoder
    text = stored_text(nbformat.read(NOTEBOOKS / 'bert_pretraining.ipynb', as_version=4))
    for line in ('(2, 8, 768)', '(2, 1) (1,)', '(2, 30000) (1,)'):
        assert line in text
    enc = BERTEncoder(50, 16, 32, 2, 1, 0.0)
    enc.initialize()
    dec = MLMDecoder(50, 16)
    dec.initialize()
    with pytest.raises(ValueError) as err:
        dec(enc(nd.ones((2, 8)), nd.zeros((2, 8)), None), nd.array([[0, 1], [4, 8]]))
    assert str(err.value) in text


def test_finetuning_outputs_match_the_code():
    import gluonnlp as nlp

    from bert_tutorial import get_pretrained_bert
    from bert_tutorial.recipes.sentiment_data import load_movie_reviews
    text = stored_text(nbformat.read(NOTEBOOKS / 'bert_finetuning.ipynb', as_version=4))
    bert, vocab = get_pretrained_bert()
    assert str(vocab) in text and 'index for [CLS] =  101' in text and 'index for [SEP] =  102' in text
    assert str(bert).splitlines()[0] in text and 'BERTEncoder(' in text
    tokenizer = nlp.data.BERTTokenizer(vocab, lower=True)
    review = load_movie_reviews('train')[16][0]
    assert review in text and ' '.join(tokenizer(review)) in text
    assert "'positive'" in text and "'negative'" in text and 'Test Accuracy' in text and 'Batch 0 Accuracy' in text


def run_notebook(name: str, tmp_path) -> nbformat.NotebookNode:
    """The notebook executed with papermill at its small size (``SMALL``)."""
    args = [sys.executable, '-m', 'papermill', str(NOTEBOOKS / name), str(tmp_path / name), '--cwd',
            str(tmp_path), '-k', 'python3', '--no-progress-bar']
    for key, value in SMALL[name].items():
        args += ['-p', key, str(value)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = nbformat.read(tmp_path / name, as_version=4)
    assert not [o for c in out.cells for o in c.get('outputs', []) if o.output_type == 'error']
    return out


@pytest.mark.slow
def test_pretraining_notebook_runs_end_to_end(tmp_path):
    run_notebook('bert_pretraining.ipynb', tmp_path)


@pytest.mark.slow
def test_finetuning_notebook_is_the_command(tmp_path):
    """At a small size the fine-tuning notebook and ``python -m bert_tutorial finetune`` are the same run: the
    same lines (``Batch``, ``Epoch``, ``Validation Accuracy``, ``Test Accuracy``, full precision) from both."""
    out = run_notebook('bert_finetuning.ipynb', tmp_path)
    small = SMALL['bert_finetuning.ipynb']
    command = subprocess.run([sys.executable, '-m', 'bert_tutorial', 'finetune', '--epochs', str(small['num_epoch']),
                              '--max-train', str(small['max_train']), '--max-test', str(small['max_test']),
                              '--max-len', str(small['max_len']), '--out', str(tmp_path / 'command'), '--no-progress'],
                             capture_output=True, text=True, check=True, timeout=900)

    def lines(text):
        return [line for line in text.splitlines()
                if line.startswith(('Batch ', 'Epoch ', 'Validation Accuracy ', 'Test Accuracy '))]

    assert lines(command.stdout) and lines(stored_text(out)) == lines(command.stdout)


SHOWN = {'bert_pretraining.ipynb': ['BERTEncoder', 'NSClassifier', 'MLMDecoder'],
         'bert_finetuning.ipynb': ['BERTClassifier']}


@pytest.mark.parametrize('name', sorted(SHOWN))
def test_shown_class_sources_are_the_packages(name):
    """Where the tutorial defines a class, the notebook shows the package's source of it: the stored output of each
    ``show_source(X)`` cell is the current ``inspect.getsource(X)``."""
    import inspect

    import bert_tutorial
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('show_source(')]
    assert [c.source[len('show_source('):-1] for c in cells] == SHOWN[name]
    for cell, cls in zip(cells, SHOWN[name]):
        (out,) = [o for o in cell.outputs if o.output_type == 'execute_result']
        source = inspect.getsource(getattr(bert_tutorial, cls))
        assert out.data['text/markdown'] == f'```python\n{source}```', (
            f'{name}: the stored source of {cls} is not the package\'s; re-execute the notebook')
