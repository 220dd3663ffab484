"""TF-IDF + logistic regression on the built-in movie-review split: the yardstick for fine-tuned BERT.

    pip install -e ".[bench]" && python benchmarks/tfidf_baseline.py [--seed 0]

It uses ``bert_tutorial.recipes.sentiment_data.load_movie_reviews``, the split the ``finetune`` command trains and
tests on, and writes ``benchmarks/results/tfidf_baseline.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from bert_tutorial.devices import measured
from bert_tutorial.recipes.sentiment_data import load_movie_reviews

RESULTS = Path(__file__).parent / 'results' / 'tfidf_baseline.json'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seed', type=int, default=0, help='the split seed (finetune --seed)')
    args = parser.parse_args()
    train, test = load_movie_reviews('train', args.seed), load_movie_reviews('test', args.seed)
    start = time.time()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(C=4.0, max_iter=2000))
    model.fit([t for t, _ in train], [y for _, y in train])
    accuracy = float(model.score([t for t, _ in test], [y for _, y in test]))
    result = {'test_accuracy': accuracy, 'num_train': len(train), 'num_test': len(test), 'seed': args.seed,
              'seconds': time.time() - start, 'model': 'tfidf(1-2 grams) + logistic regression',
              'measured': measured()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + '\n')
    print(f"TF-IDF + logistic regression: test accuracy {accuracy:.4f} "
          f"({len(train)} train / {len(test)} test snippets, split by movie, seed {args.seed})")


if __name__ == '__main__':
    main()
