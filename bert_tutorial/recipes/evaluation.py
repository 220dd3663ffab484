"""Scores of a classifier's predictions against the true classes (``python -m bert_tutorial evaluate``)."""
from __future__ import annotations

from collections.abc import Sequence


def classification_report(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """``accuracy``, per-class ``precision``/``recall``/``f1``/``support``, and ``confusion`` (rows: actual class,
    columns: predicted class, in the order of ``labels``) of predicted against actual class names."""
    if len(actual) != len(predicted) or not actual:
        raise ValueError(f'actual and predicted must be equally long and not empty, got {len(actual)} and '
                         f'{len(predicted)}')
    index = {name: i for i, name in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for a, p in zip(actual, predicted):
        confusion[index[a]][index[p]] += 1
    per_class = {}
    for i, name in enumerate(labels):
        hits, predicted_as, support = confusion[i][i], sum(row[i] for row in confusion), sum(confusion[i])
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {'precision': precision, 'recall': recall, 'f1': f1, 'support': support}
    accuracy = sum(confusion[i][i] for i in range(len(labels))) / len(actual)
    return {'accuracy': accuracy, 'classes': per_class, 'labels': list(labels), 'confusion': confusion,
            'examples': len(actual)}
