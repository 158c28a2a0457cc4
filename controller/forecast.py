"""Forecasts as the policies see them, and the adapter that feeds a predictor from observations.

The control loop observes the load every tick (the mean arrival rate over the metrics window);
a forecaster (predictor/) works on a series of fixed steps. `LoadForecaster` turns one into the
other: when a tick's observation completes a step, the observation's rate becomes that step's
value (with the default 60 s metrics window and 60 s step the two are the same window); steps
with no observation are NaN, which every forecaster handles as missing. A full refit on the
history so far runs every `forecast.refit_every_s` (0: fit once, at start). Forecasts are
offered once the series holds a day of steps (the daily cycle seen once): before that a model's
intervals come from a handful of residuals and are not worth planning on, so policies see no
forecast and fall back to the observed load ("no data yet" is a normal outcome).

Policies receive a frozen `Forecast`: quantiles of the rate for each of the next steps, and the
reason string of the model that made it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from controller.types import Observation

DAY_S = 86400.0


@dataclass(frozen=True, eq=False)
class Forecast:
    origin_s: float                  # start of the first predicted step
    step_s: float
    quantiles: tuple[float, ...]
    rps: np.ndarray                  # [steps, quantiles], req/s, non-decreasing along quantiles
    reason: str

    def peak(self, start_s: float, end_s: float) -> np.ndarray:
        """Per quantile, the highest predicted rate of the steps overlapping [start_s, end_s).

        An empty or out-of-range window reads the nearest step, so a caller always gets a value.
        """
        n = self.rps.shape[0]
        i0 = int(math.floor((start_s - self.origin_s) / self.step_s + 1e-9))
        i1 = int(math.ceil((end_s - self.origin_s) / self.step_s - 1e-9))
        i0 = min(max(i0, 0), n - 1)
        i1 = min(max(i1, i0 + 1), n)
        return self.rps[i0:i1].max(axis=0)


class LoadForecaster:
    """Feeds a predictor.Forecaster from the loop's observations and asks it for quantiles."""

    def __init__(self, model, step_s: float, history: np.ndarray | None = None,
                 refit_every_s: float = 0.0):
        self.model = model
        self.step_s = float(step_s)
        self.refit_every_s = float(refit_every_s)
        self.series: list[float] = [] if history is None else [float(x) for x in history]
        self.start_at(0.0)                       # the simulator's time 0; the daemon calls start_at
        model.fit(np.asarray(self.series, dtype=float), self.step_s)

    def start_at(self, start_s: float) -> None:
        """Count steps from `start_s`: the first step ends at the first step boundary after it.
        The simulator starts at 0; the daemon at its epoch clock, e.g. 1.8e9 s with 60 s steps:
        the first step ends at 1,800,000,060 s, where counting from 0 would first append 30
        million empty steps."""
        self.next_step_end_s = (math.floor(start_s / self.step_s + 1e-9) + 1) * self.step_s
        self.last_refit_s = float(start_s)

    @property
    def ready(self) -> bool:
        return len(self.series) * self.step_s >= DAY_S

    def observe(self, obs: Observation | None) -> None:
        """Append the steps that `obs` completes (NaN for steps nobody observed)."""
        if obs is None or obs.measured_at_s < self.next_step_end_s - 1e-9:
            return
        done = int(math.floor((obs.measured_at_s - self.next_step_end_s) / self.step_s + 1e-9)) + 1
        covers_last_step = abs(obs.window_s - self.step_s) <= 0.5 * self.step_s
        new = [math.nan] * (done - 1) + [obs.arrival_rps if covers_last_step else math.nan]
        self.series.extend(new)
        self.next_step_end_s += done * self.step_s
        if self.refit_every_s > 0 and obs.measured_at_s - self.last_refit_s >= self.refit_every_s:
            self.model.fit(np.asarray(self.series, dtype=float), self.step_s)
            self.last_refit_s = obs.measured_at_s
        else:
            self.model.update(np.asarray(new, dtype=float))

    def forecast(self, now_s: float, horizon_s: float, quantiles: Sequence[float]) -> Forecast | None:
        """Quantiles for the steps from the last completed step to `now_s + horizon_s`; None
        until the forecaster is `ready`."""
        if not self.ready:
            return None
        origin = self.next_step_end_s - self.step_s
        steps = max(1, int(math.ceil((now_s + horizon_s - origin) / self.step_s - 1e-9)))
        rps = self.model.predict(steps, list(quantiles))
        return Forecast(origin, self.step_s, tuple(float(q) for q in quantiles), rps, self.model.reason)
