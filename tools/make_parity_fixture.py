"""Make the reference fixture for the conversion parity test, with Hugging Face ``transformers``.

torch and transformers are not dependencies of the package, so this script runs them in a separate,
throwaway virtual environment (created on first use, default /tmp/hf-venv):

    python tools/make_parity_fixture.py            # run from the project's venv

It writes ``tests/fixtures/minilm_parity.npz`` (token ids, segment ids, valid lengths, Hugging Face's
``last_hidden_state`` and ``pooler_output`` for ten real sentences and sentence pairs) and prints how often
GluonNLP's ``BERTTokenizer`` and Hugging Face's ``BertTokenizer`` agree on the movie-review snippets.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / 'tests' / 'fixtures' / 'minilm_parity.npz'

# Ten inputs: single review snippets and (snippet, snippet) pairs, so segment ids 1 are exercised.
NUM_SINGLE, NUM_PAIRS = 5, 5


def outer(venv: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import gluonnlp as nlp

    from bert_tutorial.recipes.hub import builtin_checkpoint_dir
    from bert_tutorial.recipes.sentiment_data import read_rotten_tomatoes
    from bert_tutorial.vocab import load_vocabulary

    if not (venv / 'bin' / 'python').exists():
        subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
        subprocess.run([str(venv / 'bin' / 'pip'), 'install', 'torch', 'transformers', 'safetensors', 'numpy'],
                       check=True)
    checkpoint = builtin_checkpoint_dir()
    tokenizer = nlp.data.BERTTokenizer(load_vocabulary(checkpoint / 'vocab.txt'), lower=True)
    texts = [r['text'] for r in read_rotten_tomatoes() if r['category'] != 'plot' and r['text'].strip()]
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / 'gluonnlp_tokens.json'
        payload.write_text(json.dumps({'texts': texts, 'tokens': [tokenizer(t) for t in texts]}))
        subprocess.run([str(venv / 'bin' / 'python'), __file__, '--inner', str(checkpoint), str(payload)], check=True)


def inner(checkpoint: Path, payload: Path) -> None:
    import numpy as np
    import torch
    from transformers import BertModel, BertTokenizer

    data = json.loads(payload.read_text())
    hf_tok = BertTokenizer(str(checkpoint / 'vocab.txt'), do_lower_case=True)
    mismatches = [(t, g) for t, g in zip(data['texts'], data['tokens']) if hf_tok.tokenize(t) != g]
    n = len(data['texts'])
    print(f'tokenizer agreement: {n - len(mismatches)}/{n} = {(n - len(mismatches)) / n:.5f}')
    for text, gluon_tokens in mismatches[:20]:
        print('  mismatch:', repr(text[:200]))
        print('    gluonnlp:', gluon_tokens[:40])
        print('    hf      :', hf_tok.tokenize(text)[:40])

    texts = data['texts']
    single = [(texts[i * 997], None) for i in range(NUM_SINGLE)]
    pairs = [(texts[i * 1013 + 1], texts[i * 1013 + 2]) for i in range(NUM_PAIRS)]
    rows = [hf_tok(a, b) if b is not None else hf_tok(a) for a, b in single + pairs]
    seq_len = max(len(r['input_ids']) for r in rows)
    ids = np.zeros((len(rows), seq_len), dtype=np.int64)
    segments = np.zeros_like(ids)
    valid = np.array([len(r['input_ids']) for r in rows])
    for i, r in enumerate(rows):
        ids[i, :valid[i]] = r['input_ids']
        segments[i, :valid[i]] = r['token_type_ids']
    mask = (np.arange(seq_len)[None, :] < valid[:, None]).astype(np.int64)
    model = BertModel.from_pretrained(str(checkpoint)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                    attention_mask=torch.tensor(mask))
    import transformers
    np.savez_compressed(FIXTURE, input_ids=ids, token_type_ids=segments, valid_length=valid,
                        last_hidden_state=out.last_hidden_state.numpy().astype(np.float32),
                        pooler_output=out.pooler_output.numpy().astype(np.float32),
                        versions=np.array([f'torch {torch.__version__}', f'transformers {transformers.__version__}']))
    print(f'wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes) with torch {torch.__version__}, '
          f'transformers {transformers.__version__}')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--venv', type=Path, default=Path('/tmp/hf-venv'), help='throwaway venv for transformers')
    parser.add_argument('--inner', nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(*args.inner)
    else:
        outer(args.venv)
