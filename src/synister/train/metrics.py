"""Running training metrics for the logs: per-class accuracy over the most recent samples."""

from __future__ import annotations

from collections import deque

import numpy as np


class WindowedAccuracy:
    """Accuracy per true class over the last ``window`` samples.

    A window (not the whole run) so the logged curve shows what the network does now; the
    class-balanced sampler makes each class fill about 1/n of it.
    """

    def __init__(self, num_classes: int, window: int):
        if window < 1:
            raise ValueError(f"window must be >= 1 sample, got {window}")
        self.num_classes = num_classes
        self._labels: deque[int] = deque(maxlen=window)
        self._correct: deque[bool] = deque(maxlen=window)

    def update(self, labels: np.ndarray, predicted: np.ndarray) -> None:
        labels = np.asarray(labels).reshape(-1)
        predicted = np.asarray(predicted).reshape(-1)
        if labels.shape != predicted.shape:
            raise ValueError(f"{labels.shape[0]} labels but {predicted.shape[0]} predictions")
        self._labels.extend(int(v) for v in labels)
        self._correct.extend(bool(v) for v in labels == predicted)

    def per_class(self) -> np.ndarray:
        """Accuracy per class, NaN for a class with no sample in the window."""
        labels = np.fromiter(self._labels, dtype=np.int64, count=len(self._labels))
        correct = np.fromiter(self._correct, dtype=bool, count=len(self._correct))
        counts = np.bincount(labels, minlength=self.num_classes).astype(float)
        hits = np.bincount(labels, weights=correct, minlength=self.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)

    def overall(self) -> float:
        if not self._correct:
            return float("nan")
        return float(np.mean(self._correct))
