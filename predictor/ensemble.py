"""Ensemble weighted by recent skill, with its own conformal quantiles.

`SkillWeighted` combines member medians on the log scale with weights per horizon h
proportional to 1 / MAE_m(h)^power, where MAE_m(h) is an EWMA (half-life `skill_halflife_steps`)
of member m's absolute log error at horizon h, measured against the path it issued h steps
earlier (so skill is strictly out-of-sample). `Ensemble` wraps that in `Calibrated`, so its
quantiles come from the ensemble's own recent errors.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from predictor.base import Forecaster, clean_quantiles, valid_step_s
from predictor.conformal import Calibrated
from predictor.naive import sanitize


class SkillWeighted(Forecaster):
    """Point forecaster: skill-weighted mean of member medians (log scale)."""

    name = "skill-weighted"

    def __init__(self, members: Sequence[Forecaster], max_horizon: int = 30,
                 skill_halflife_steps: float = 360.0, power: float = 2.0) -> None:
        super().__init__()
        if not members:
            raise ValueError("ensemble needs at least one member")
        self.members = list(members)
        self.H = max(int(max_horizon), 1)
        self.a = 1.0 - 0.5 ** (1.0 / max(float(skill_halflife_steps), 1.0))
        self.power = float(power)
        self.c = 1.0 / 60.0
        self._reset()

    def _reset(self) -> None:
        M, H = len(self.members), self.H
        self.n_obs = 0
        self.paths = np.full((M, H, H), np.nan)    # [member, origin % H, horizon]
        self.stamp = np.full(H, -1, dtype=np.int64)
        self.mae = np.full((M, H), np.nan)
        self.n_err = np.zeros((M, H), dtype=int)
        self.failed = np.zeros(M, dtype=bool)
        self.last_log = float("nan")

    def min_history(self, step_s: float) -> int:
        needs = [m.min_history(step_s) for m in self.members if callable(getattr(m, "min_history", None))]
        return max(needs) if needs else 30

    @property
    def refit_due(self) -> bool:
        return any(getattr(m, "refit_due", False) for m in self.members)

    def refit(self) -> None:
        for m in self.members:
            f = getattr(m, "refit", None)
            if callable(f) and getattr(m, "refit_due", True):
                try:
                    f()
                except Exception:
                    pass
        self._record()

    def _member_path(self, i: int, h: int) -> np.ndarray:
        m = self.members[i]
        try:
            if hasattr(m, "point_log"):
                p = np.asarray(m.point_log(h), dtype=float)
            else:
                p = np.log(np.asarray(m.predict(h, [0.5]), dtype=float)[:, 0] + self.c)
            if p.shape == (h,) and np.isfinite(p).all():
                self.failed[i] = False
                return p
        except Exception:
            pass
        self.failed[i] = True
        return np.full(h, np.nan)

    def _record(self) -> None:
        row = self.n_obs % self.H
        for i in range(len(self.members)):
            self.paths[i, row] = self._member_path(i, self.H)
        self.stamp[row] = self.n_obs

    def fit(self, history, step_s: float) -> None:
        self.step_s = valid_step_s(step_s)
        self.c = 1.0 / self.step_s
        self._reset()
        y = sanitize(history)
        for i, m in enumerate(self.members):
            try:
                m.fit(y, self.step_s)
            except Exception:
                self.failed[i] = True
        self.n_obs = y.size
        fin = y[np.isfinite(y)]
        self.last_log = math.log(fin[-1] + self.c) if fin.size else float("nan")
        self._record()
        self.reason = self._describe()

    def update(self, new) -> None:
        for v in sanitize(new):
            for m in self.members:
                try:
                    m.update(np.array([v]))
                except Exception:
                    pass
            t = self.n_obs
            if math.isfinite(v):
                x = math.log(v + self.c)
                self.last_log = x
                ks = np.arange(self.H)
                rows = (t - ks) % self.H
                ok = self.stamp[rows] == t - ks
                if ok.any():
                    err = np.abs(x - self.paths[:, rows[ok], ks[ok]])      # [M, n_ok]
                    cur = self.mae[:, ks[ok]]
                    fresh = ~np.isfinite(cur)
                    w = np.maximum(self.a, 1.0 / (self.n_err[:, ks[ok]] + 1.0))
                    new_mae = np.where(fresh, err, cur + w * (err - cur))
                    good = np.isfinite(err)
                    self.mae[:, ks[ok]] = np.where(good, new_mae, cur)
                    self.n_err[:, ks[ok]] += good
            self.n_obs = t + 1
            self._record()

    def weights(self) -> np.ndarray:
        """[M, H] weights (columns sum to 1) from recent skill; equal where skill is unknown."""
        mae = self.mae.copy()
        known = np.isfinite(mae) & (self.n_err >= 5)
        inv = np.where(known, 1.0 / np.maximum(mae, 1e-4) ** self.power, np.nan)
        cnt = known.sum(axis=0)
        col_mean = np.where(cnt > 0, np.where(known, inv, 0.0).sum(axis=0) / np.maximum(cnt, 1), 1.0)
        w = np.where(known, inv, col_mean[None, :])
        w[self.failed] = 0.0
        s = w.sum(axis=0, keepdims=True)
        return np.where(s > 0, w / np.where(s > 0, s, 1.0), 1.0 / len(self.members))

    def point_log(self, h: int) -> np.ndarray:
        h = max(int(h), 1)
        row = self.n_obs % self.H
        if self.stamp[row] != self.n_obs:
            self._record()
        if h <= self.H:
            P = self.paths[:, row, :h]
        else:
            P = np.stack([self._member_path(i, h) for i in range(len(self.members))])
        W = self.weights()
        Wh = W[:, np.minimum(np.arange(h), self.H - 1)]
        ok = np.isfinite(P)
        Wh = np.where(ok, Wh, 0.0)
        tot = Wh.sum(axis=0)
        comb = np.where(tot > 0, (Wh * np.where(ok, P, 0.0)).sum(axis=0) / np.where(tot > 0, tot, 1.0), np.nan)
        last = self.last_log if math.isfinite(self.last_log) else math.log(self.c)
        return np.where(np.isfinite(comb), comb, last)

    def _describe(self) -> str:
        W = self.weights()[:, 0]
        parts = [f"{getattr(m, 'name', '?')}={w:.2f}" for m, w in zip(self.members, W)]
        fails = [getattr(m, "name", "?") for m, f in zip(self.members, self.failed) if f]
        s = "weights@h1 " + " ".join(parts)
        if fails:
            s += f"; failed members ignored: {', '.join(fails)}"
        keys = ("imputed", "level", "only", "fall", "refit due", "error", "constant")
        notes = [r for r in (getattr(m, "reason", "") for m in self.members)
                 if any(k in r for k in keys)]
        if notes:
            s += "; members: " + " | ".join(n if len(n) <= 160 else n[:157] + "..." for n in notes)
        return s

    def predict(self, horizon_steps: int, quantiles: Sequence[float]) -> np.ndarray:
        h = max(int(horizon_steps), 1)
        p = np.exp(self.point_log(h)) - self.c
        self.reason = self._describe()
        return clean_quantiles(np.repeat(p[:, None], len(quantiles), axis=1))


class Ensemble(Calibrated):
    """Skill-weighted ensemble of `members` with its own conformal quantiles.

    members: forecasters (their medians are combined). window / max_horizon: as Calibrated.
    skill_halflife_steps: memory of the skill (MAE) EWMA. power: weights ~ 1/MAE^power.
    """

    def __init__(self, members: Sequence[Forecaster], window: int | None = None,
                 max_horizon: int = 30, skill_halflife_steps: float = 360.0,
                 power: float = 2.0, min_residuals: int = 30) -> None:
        inner = SkillWeighted(members, max_horizon, skill_halflife_steps, power)
        super().__init__(inner, window=window, max_horizon=max_horizon,
                         min_residuals=min_residuals)
        self.name = "ensemble"

    @property
    def members(self) -> list[Forecaster]:
        return self.base.members

    def _set_reason(self, n_min=None, fallback=False) -> None:
        super()._set_reason(n_min, fallback)
        r = self.reason
        i = r.find("; base: ")
        self.reason = (r[:i] if i >= 0 else r) + "; " + self.base._describe()
