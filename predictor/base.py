"""The forecaster contract.

A forecaster sees the arrival rate as a series of steps (req/s averaged over `step_s` seconds;
NaN marks a masked or missing step) and predicts, for each of the next `horizon` steps, chosen
quantiles of that step's rate. The planner takes the highest predicted rate over the launch lead
time, so "the peak within the lead time" is the max over the predicted steps.

Contract (the controller relies on it):
- `fit(history, step_s)` may be slow (seconds); it runs off the decision path, on a schedule.
- `update(new)` appends observed steps and must be cheap (well under 5 ms per step).
- `predict(horizon_steps, quantiles)` returns an array [horizon_steps, len(quantiles)] of
  req/s, non-negative, non-decreasing along the quantile axis, never NaN.
- Bad input (too little history, NaN, all zeros, level shifts) never raises from update or
  predict: the forecaster falls back to a simpler estimate, widens its intervals, and says so in
  `reason`.
- `save(path)` / `load(path)` round-trip a fitted forecaster.
"""
from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np


class Forecaster(ABC):
    name: str = "forecaster"

    def __init__(self) -> None:
        self.step_s: float = 60.0
        self.reason: str = "not fitted"

    @abstractmethod
    def fit(self, history: np.ndarray, step_s: float) -> None: ...

    @abstractmethod
    def update(self, new: np.ndarray) -> None: ...

    @abstractmethod
    def predict(self, horizon_steps: int, quantiles: Sequence[float]) -> np.ndarray: ...

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self))

    @classmethod
    def load(cls, path: str | Path) -> "Forecaster":
        obj = pickle.loads(Path(path).read_bytes())
        if not isinstance(obj, Forecaster):
            raise ValueError(f"{path}: not a saved forecaster")
        return obj


def clean_quantiles(pred: np.ndarray) -> np.ndarray:
    """Non-negative, finite, and non-decreasing across quantiles (sorting fixes crossings)."""
    out = np.nan_to_num(np.asarray(pred, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(out, 0.0, out=out)
    out.sort(axis=1)
    return out


def valid_step_s(step_s) -> float:
    """The step in seconds, or 60 s when it is not a positive number (forecasters never raise)."""
    try:
        value = float(step_s)
    except (TypeError, ValueError):
        return 60.0
    return value if value > 0 else 60.0
