"""LSTMQuantile: fits a small diurnal series quickly, beats last-value, clean outputs, save/load."""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from predictor.backtest import backtest  # noqa: E402
from predictor.base import Forecaster, clean_quantiles  # noqa: E402
from predictor.lstm import LSTMQuantile  # noqa: E402

STEP = 600.0
PER_DAY = 144


def diurnal(n_days=10, seed=0):
    t = np.arange(n_days * PER_DAY)
    rng = np.random.default_rng(seed)
    base = 100 * (1 + 0.6 * np.sin(2 * np.pi * t / PER_DAY)) * (1 + 0.2 * np.sin(2 * np.pi * t / 37))
    return base * (1 + 0.05 * rng.standard_normal(t.size))


class LastValue(Forecaster):
    name = "last-value-test"

    def fit(self, history, step_s):
        self.last = float(np.asarray(history)[-1])

    def update(self, new):
        self.last = float(np.asarray(new)[-1])

    def predict(self, horizon_steps, quantiles):
        return clean_quantiles(np.full((horizon_steps, len(quantiles)), self.last))


def small(**kw):
    kw.setdefault("max_train_s", 15.0)
    kw.setdefault("max_epochs", 40)
    return LSTMQuantile(step_s=STEP, **kw)


@pytest.fixture(scope="module")
def fitted():
    s = diurnal()
    m = small()
    t0 = time.perf_counter()
    m.fit(s[:8 * PER_DAY], STEP)
    return m, s, time.perf_counter() - t0


def test_fits_fast_and_beats_last_value(fitted):
    m, s, fit_s = fitted
    assert fit_s < 20
    assert m._fitted and m.use_season and m.period == PER_DAY and "fitted" in m.reason
    end = 8 * PER_DAY
    # fresh copy via pickle so the fixture model is untouched by the backtest
    import pickle
    r = backtest(s, STEP, pickle.loads(pickle.dumps(m)), end, 6, quantiles=(0.5, 0.9, 0.99))
    # backtest refits; compare against last value on the same origins
    r_lv = backtest(s, STEP, LastValue(), end, 6)
    assert r.overall["mae"] < 0.8 * r_lv.overall["mae"]
    assert r.overall["mase"] < 1.0
    assert 0.6 < r.overall["coverage_p90"] <= 1.0
    assert r.seconds_per_predict < 0.02 and r.seconds_per_update < 0.001


def test_outputs_shapes_monotone_finite(fitted):
    m, s, _ = fitted
    for h in (1, 6, 12, 30):
        p = m.predict(h, (0.1, 0.5, 0.9, 0.99, 0.999))
        assert p.shape == (h, 5)
        assert np.isfinite(p).all() and (p >= 0).all()
        assert (np.diff(p, axis=1) >= 0).all()
    assert "clamped" in m.reason                 # 0.999 is outside the trained levels
    assert m.predict(0, (0.5,)).shape == (0, 1)
    p = m.predict(3, (0.5, 0.9))
    assert 20 < p[0, 0] < 300


def test_update_bounded_and_nan_tolerant(fitted):
    import pickle
    m = pickle.loads(pickle.dumps(fitted[0]))
    cap = m._capacity()
    for v in diurnal(n_days=3, seed=1):
        m.update(np.array([v]))
    assert m._buf.size <= 2 * cap
    m.update(np.array([np.nan] * 10))
    m.update(np.array([np.inf, -5.0]))
    p = m.predict(6, (0.5, 0.9, 0.99))
    assert np.isfinite(p).all() and (np.diff(p, axis=1) >= 0).all()
    assert "missing" in m.reason


def test_short_history_and_unfitted_fall_back():
    m = small()
    p = m.predict(4, (0.5, 0.9))
    assert p.shape == (4, 2) and (p == 0).all() and "not fitted" in m.reason
    m.update(np.array([10.0, 12.0]))
    p = m.predict(4, (0.5, 0.9))
    assert np.isfinite(p).all() and p[0, 0] > 0 and p[0, 1] >= p[0, 0]
    m.fit(np.array([5.0] * 30), STEP)            # far too short to train
    assert not m._fitted and "not enough" in m.reason
    p = m.predict(3, (0.5, 0.99))
    assert p.shape == (3, 2) and np.isfinite(p).all() and "fallback" in m.reason
    z = small()
    z.fit(np.zeros(2000), STEP)                  # all zeros: no raise, no NaN
    assert np.isfinite(z.predict(5, (0.5, 0.9))).all()


def test_save_load_round_trip(fitted, tmp_path):
    m, s, _ = fitted
    q = (0.5, 0.9, 0.99)
    path = tmp_path / "lstm.pkl"
    m.save(path)
    m2 = Forecaster.load(path)
    assert isinstance(m2, LSTMQuantile)
    np.testing.assert_allclose(m2.predict(6, q), m.predict(6, q), rtol=1e-6)
    m.update(np.array([120.0]))
    m2.update(np.array([120.0]))
    np.testing.assert_allclose(m2.predict(6, q), m.predict(6, q), rtol=1e-6)


def test_deterministic_fit():
    s = diurnal(n_days=5)
    a, b = small(max_epochs=3), small(max_epochs=3)
    a.fit(s, STEP)
    b.fit(s, STEP)
    np.testing.assert_array_equal(a.predict(6, (0.5, 0.9)), b.predict(6, (0.5, 0.9)))


def test_registered_as_lstm():
    from predictor.registry import make_forecaster
    assert isinstance(make_forecaster("lstm", 60.0), LSTMQuantile)
