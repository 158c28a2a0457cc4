"""Rolling-origin backtest: perfect forecaster, no peeking, NaN actuals, metrics, plot, compare."""
from __future__ import annotations

import numpy as np
import pytest

from predictor.backtest import backtest, compare, pinball, plot_bands, season_steps_for
from predictor.base import Forecaster, clean_quantiles
from predictor.series import DEFAULT_SPLITS, splits_table, step_series, train_test_split


def diurnal(n_days=4, step_s=600.0, seed=0, noise=0.03):
    per_day = int(86400 / step_s)
    t = np.arange(n_days * per_day)
    rng = np.random.default_rng(seed)
    base = 100 * (1 + 0.5 * np.sin(2 * np.pi * t / per_day))
    return base * (1 + noise * rng.standard_normal(t.size))


class LastValue(Forecaster):
    name = "last-value-test"

    def fit(self, history, step_s):
        self.step_s = step_s
        v = np.asarray(history)[~np.isnan(history)]
        self.last = float(v[-1]) if v.size else 0.0

    def update(self, new):
        new = np.asarray(new)
        if new.size and not np.isnan(new[-1]):
            self.last = float(new[-1])

    def predict(self, horizon_steps, quantiles):
        return clean_quantiles(np.full((horizon_steps, len(quantiles)), self.last))


class Oracle(Forecaster):
    """Knows the whole series (for testing the metrics only) and tracks its position."""
    name = "oracle"

    def __init__(self, full):
        super().__init__()
        self.full = np.asarray(full, float)

    def fit(self, history, step_s):
        self.pos = len(history)

    def update(self, new):
        self.pos += len(np.atleast_1d(new))

    def predict(self, horizon_steps, quantiles):
        v = self.full[self.pos:self.pos + horizon_steps]
        v = np.concatenate([v, np.zeros(horizon_steps - v.size)])
        return np.repeat(np.nan_to_num(v)[:, None], len(quantiles), axis=1)


class Recorder(Forecaster):
    """Records every value it is given, with the number of predicts done before it arrived."""
    name = "recorder"

    def fit(self, history, step_s):
        self.seen = list(np.asarray(history, float))
        self.fit_lens = [len(history)]

    def update(self, new):
        self.seen.extend(np.atleast_1d(np.asarray(new, float)).tolist())

    def predict(self, horizon_steps, quantiles):
        self.predict_at = getattr(self, "predict_at", []) + [len(self.seen)]
        return np.zeros((horizon_steps, len(quantiles)))


def test_perfect_forecaster_scores_zero():
    s = diurnal()
    end = 3 * 144
    r = backtest(s, 600.0, Oracle(s), end, 6)
    ov = r.overall
    assert ov["mae"] == 0.0
    assert ov["mase"] == 0.0
    assert ov["coverage_p90"] == 1.0 and ov["coverage_p99"] == 1.0 and ov["coverage_p50"] == 1.0
    assert ov["pinball_p90"] == 0.0
    assert r.season_steps == 144
    assert r.origins.size == s.size - end
    # the last origins have fewer actuals: only in-range pairs count
    assert ov["n"] == sum(min(6, s.size - t) for t in range(end, s.size))
    ph = r.per_horizon()
    assert len(ph) == 6 and all(d["mae"] == 0.0 for d in ph)


def test_no_peeking_and_update_every_step():
    s = np.arange(300, dtype=float)
    m = Recorder()
    end = 200
    r = backtest(s, 60.0, m, end, 5, max_origins=20)
    assert m.fit_lens == [end]
    # values arrive in order, exactly once, and equal the series prefix
    assert np.array_equal(np.array(m.seen), s)
    # at each predict, the model had seen exactly series[:origin]
    assert m.predict_at == r.origins.tolist()
    assert r.origins.size == 20 and r.origins[0] == end
    assert r.update_s.size == 100 and r.predict_s.size == 20


def test_model_cannot_reach_future_through_the_array():
    s = np.arange(100, dtype=float)

    class Sneaky(Recorder):
        def fit(self, history, step_s):
            super().fit(history, step_s)
            assert history.base is None or history.base.size == history.size
    backtest(s, 60.0, Sneaky(), 50, 3)


def test_nan_actuals_are_skipped():
    s = diurnal()
    s_nan = s.copy()
    end = 3 * 144
    s_nan[end + 10:end + 40] = np.nan
    r = backtest(s_nan, 600.0, Oracle(s), end, 4)
    ov = r.overall
    assert np.isfinite(ov["mae"]) and ov["mae"] == 0.0
    r2 = backtest(s, 600.0, Oracle(s), end, 4)
    assert ov["n"] == r2.overall["n"] - 30 * 4


def test_metrics_against_hand_computation():
    s = diurnal(n_days=3)
    end = 2 * 144
    r = backtest(s, 600.0, LastValue(), end, 3, quantiles=(0.5, 0.9))
    # last value at origin t is s[t-1]; seasonal naive for step t+k-1 is s[t+k-1-144]
    err, nerr, pin = [], [], []
    for t in range(end, s.size):
        for k in range(1, 4):
            if t + k - 1 < s.size:
                a = s[t + k - 1]
                err.append(abs(s[t - 1] - a))
                nerr.append(abs(s[t + k - 1 - 144] - a))
                pin.append(max(0.9 * (a - s[t - 1]), -0.1 * (a - s[t - 1])))
    ov = r.overall
    assert ov["mae"] == pytest.approx(np.mean(err))
    assert ov["naive_mae"] == pytest.approx(np.mean(nerr))
    assert ov["mase"] == pytest.approx(np.mean(err) / np.mean(nerr))
    assert ov["pinball_p90"] == pytest.approx(np.mean(pin))
    assert 0 < ov["coverage_p90"] < 1
    assert r.seconds_per_update >= 0 and r.seconds_per_predict >= 0


def test_season_fallback_and_pinball():
    assert season_steps_for(60.0, 10000) == 1440
    assert season_steps_for(3600.0, 600) == 24
    assert season_steps_for(7000.0, 600) == 1      # a day is not a whole number of steps
    assert season_steps_for(60.0, 100) == 1        # training part shorter than a day
    assert pinball(np.array([1.0]), np.array([0.0]), 0.9)[0] == pytest.approx(0.9)
    assert pinball(np.array([0.0]), np.array([1.0]), 0.9)[0] == pytest.approx(0.1)


def test_refit_and_plot_and_write(tmp_path):
    s = diurnal()
    m = Recorder()
    r = backtest(s, 600.0, m, 3 * 144, 4, refit_every_steps=50, trace="synthetic")
    assert len(r.refit_s) == (s.size - 3 * 144 - 1) // 50
    assert m.fit_lens[-1] == 3 * 144 + 50 * len(r.refit_s)
    png = plot_bands(backtest(s, 600.0, LastValue(), 3 * 144, 4), tmp_path / "b.png", horizon_step=2)
    assert png.stat().st_size > 5000
    out = r.write(tmp_path / "bt")
    assert (out / "backtest.json").is_file() and (out / "per_horizon.csv").is_file()


def test_compare_with_factories(tmp_path):
    msgs = []
    df = compare(traces=["synthetic:diurnal"], models={"last": lambda st: LastValue()},
                 horizons_s=(60, 300), max_origins=50, out_dir=tmp_path, progress=msgs.append,
                 step_s={"synthetic:diurnal": 600.0})
    assert len(df) == 1 and df.loc[0, "error"] == ""
    assert {"mase@1m", "mase@5m", "coverage_p90", "coverage_p99", "ms_per_update"} <= set(df.columns)
    assert (tmp_path / "compare.csv").is_file() and (tmp_path / "compare.md").read_text().startswith("| trace")
    assert msgs


def test_compare_records_errors(tmp_path):
    class Broken(LastValue):
        def predict(self, h, q):
            return np.zeros((h + 1, len(q)))
    df = compare(traces=["synthetic:diurnal"], models={"broken": lambda st: Broken()},
                 max_origins=10, step_s={"synthetic:diurnal": 600.0})
    assert "shape" in df.loc[0, "error"]


def test_step_series_peak_is_the_busiest_second():
    from traces.model import Trace
    counts = np.ones(120)
    counts[30], counts[100] = 9.0, 5.0           # one busy second in each minute
    tr = Trace(name="t", source="", licence="", start="", duration_s=120.0, bin_s=1.0, counts=counts)
    assert np.allclose(step_series(tr, 60.0), [9.0, 5.0])
    assert np.allclose(step_series(tr, 60.0, "mean"), [68 / 60, 64 / 60])
    hourly = Trace(name="h", source="", licence="", start="", duration_s=7200.0, bin_s=3600.0,
                   counts=np.array([3600.0, 7200.0]))
    assert np.allclose(step_series(hourly, 3600.0), [1.0, 2.0])   # no seconds to look into


def test_step_series_masks_and_splits():
    from traces.model import Trace
    tr = Trace(name="t", source="", licence="", start="", duration_s=650.0, bin_s=1.0,
               counts=np.ones(650) * 2, masked=((125.0, 130.0),))
    s = step_series(tr, 60.0)
    assert s.size == 10                                  # partial tail dropped
    assert np.isnan(s[2]) and np.isnan(s).sum() == 1
    assert np.allclose(s[~np.isnan(s)], 2.0)
    tr2 = Trace(name="t", source="", licence="", start="", duration_s=650.0, bin_s=1.0,
                counts=np.ones(650), masked=((110.0, 125.0),))
    assert np.isnan(step_series(tr2, 60.0)[1:3]).all()   # straddles two steps
    x = np.arange(100.0)
    tr_, te_, end = train_test_split(x, train_fraction=0.8)
    assert end == 80 and tr_.size == 80 and te_.size == 20
    assert train_test_split(np.arange(1440 * 3.0), train_days=2, step_s=60)[2] == 2880
    assert train_test_split(np.arange(31 * 24.0), step_s=3600, trace_name="wikipedia")[2] == 21 * 24
    assert DEFAULT_SPLITS["nasa"].train_end(10 ** 6, 60.0) == 2381545 // 60
    assert {r["trace"] for r in splits_table()} >= {"twitter", "nasa", "wikipedia", "servegen-m-mid"}
