"""Forecaster registry: name -> factory(step_s) -> Forecaster.

    make_forecaster("holt-winters", step_s=60.0)
    register("my-model", factory)    # other modules add models this way

Periods are derived from step_s: daily = 86400/step_s steps, weekly = 7x that.
"holt-winters", "sarimax" and "ensemble" come with conformal quantiles (Calibrated);
the seasonal naives use their own empirical seasonal errors and "ewma" its own per-horizon
variance. "*-raw" variants expose the uncalibrated statsmodels models.
"""
from __future__ import annotations

from typing import Callable

from predictor.base import Forecaster
from predictor.conformal import Calibrated
from predictor.ensemble import Ensemble
from predictor.ewma import EWMA
from predictor.naive import LastValue, SeasonalNaive
from predictor.statsmodels_models import HoltWinters, Sarimax, daily_period

Factory = Callable[[float], Forecaster]


def _ewma_halflife(step_s: float) -> float:
    # about 10 minutes of level memory at fine steps, never under one step
    return max(600.0 / float(step_s), 1.0)


def _lstm(step_s: float) -> Forecaster:
    # Imported on demand: torch takes a second or two to import.
    from predictor.lstm import LSTMQuantile
    return LSTMQuantile(step_s=step_s)


def _ensemble(step_s: float) -> Forecaster:
    # The LSTM joins the statistical members: it carries Twitter at 15 minutes (ensemble MASE
    # 0.998 without it, 0.807 with it) and skill weighting mutes it where it is weak
    # (ServeGen m-mid: 0.444 without, 0.441 with). It makes the ensemble's fit ~45 s longer on
    # two weeks of 1-minute steps; fits run off the decision path.
    d = daily_period(step_s)
    return Ensemble([SeasonalNaive(d), SeasonalNaive(7 * d), EWMA(_ewma_halflife(step_s)),
                     HoltWinters(d), Sarimax((1, 0, 1), d), _lstm(step_s)])


MODELS: dict[str, Factory] = {
    "last-value": lambda step_s: LastValue(),
    "seasonal-naive-daily": lambda step_s: SeasonalNaive(daily_period(step_s)),
    "seasonal-naive-weekly": lambda step_s: SeasonalNaive(7 * daily_period(step_s)),
    "ewma": lambda step_s: EWMA(_ewma_halflife(step_s)),
    "holt-winters": lambda step_s: Calibrated(HoltWinters(daily_period(step_s))),
    "sarimax": lambda step_s: Calibrated(Sarimax((1, 0, 1), daily_period(step_s))),
    "holt-winters-raw": lambda step_s: HoltWinters(daily_period(step_s)),
    "sarimax-raw": lambda step_s: Sarimax((1, 0, 1), daily_period(step_s)),
    "ensemble": _ensemble,
    "lstm": _lstm,
}


def register(name: str, factory: Factory) -> None:
    """Add (or replace) a model: factory(step_s) -> Forecaster."""
    if not callable(factory):
        raise TypeError(f"factory for {name!r} is not callable")
    MODELS[str(name)] = factory


def model_names() -> list[str]:
    return sorted(MODELS)


def make_forecaster(name: str, step_s: float = 60.0) -> Forecaster:
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown forecaster {name!r}; known: {', '.join(model_names())}") from None
    step_s = float(step_s)
    if not step_s > 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    f = factory(step_s)
    f.step_s = step_s
    return f
