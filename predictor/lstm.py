"""A small LSTM quantile forecaster (torch, CPU).

Model
-----
For an origin t (the model has seen steps [0, t)) it predicts, for each of the next H steps,
the quantiles ``LEVELS`` of the rate. Everything is in log space relative to the recent level:

    level   = mean of the last L observed steps (NaN forward-filled) + eps
    z[i]    = log(x[i] + eps) - log(level)            (eps = 5 % of the training mean rate)

Inputs: the last L values of z (through a 1-layer LSTM, and the last 8 also straight into the
head), the same time one season (1 day) earlier (z at t-P-12 ... t-P+H-1, which tells the
model what the coming steps looked like yesterday relative to now), and sin/cos of the time of
day and of the week of the origin (phase counted from the first fitted step, i.e. trace t=0).
The head outputs, per horizon step, a base value plus softplus increments, so the quantiles
never cross. Loss: pinball (quantile) loss over all levels and horizons, masked where the
target step is NaN. Because quantiles commute with the monotone map log(x + eps), the log-space
quantiles transform back exactly: q(x) = exp(q(z) + log level) - eps.

Training (``fit``): offline on the given history, seeded and deterministic (torch.manual_seed,
use_deterministic_algorithms, 1 thread), Adam, early stopping on the last 15 % of the history
(by time, no shuffling across the cut), bounded by ``max_train_s`` seconds. The same
validation part then calibrates each (horizon, level): the level's empirical quantile of the
validation residuals is added as a shift (conformalised quantile regression), so the p90 and
p99 cover what they claim on recent data.

``update`` appends to a bounded buffer (O(1), a few microseconds); ``predict`` runs one forward
pass under ``torch.inference_mode`` and interpolates linearly between the trained levels for
any requested quantile (clamped to [0.01, 0.995] outside them; the reason says so). When the
buffer holds fewer valid steps than the lookback, or the model was never fitted, it falls back
to "recent mean x training ratio quantiles" (or wide default ratios) and says so in ``reason``.
Horizons beyond the trained H repeat the last trained step.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from predictor.base import Forecaster, clean_quantiles
from predictor.naive import sanitize

LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995)
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
_SEASON_PRE = 12   # steps before "same time yesterday" given to the head
_SKIP = 8          # last lookback values given straight to the head
_DEFAULT_RATIOS = np.array([0.3, 0.5, 0.6, 0.75, 1.0, 1.3, 1.6, 1.9, 2.5, 3.0])  # per LEVELS


def _torch():
    import torch
    return torch


def _ffill(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Forward-fill NaN; leading NaN take the first valid value (or ``fill`` if none)."""
    x = np.asarray(x, dtype=np.float64)
    bad = np.isnan(x)
    if not bad.any():
        return x.copy()
    if bad.all():
        return np.full_like(x, fill)
    idx = np.where(~bad, np.arange(x.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = int(np.argmax(~bad))
    out[:first] = x[first]
    return out


def _build_net(lookback: int, season_len: int, n_time: int, horizon: int, n_levels: int,
               hidden: int):
    torch = _torch()
    nn = torch.nn

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.horizon, self.n_levels = horizon, n_levels
            self.lstm = nn.LSTM(1, hidden, batch_first=True)
            n_in = hidden + min(_SKIP, lookback) + season_len + n_time
            self.head = nn.Sequential(nn.Linear(n_in, 2 * hidden), nn.ReLU(),
                                      nn.Linear(2 * hidden, horizon * n_levels))

        def forward(self, look, season, tfeat):
            _, (h, _) = self.lstm(look.unsqueeze(-1))
            feats = [h[-1], look[:, -min(_SKIP, lookback):], season, tfeat]
            raw = self.head(torch.cat(feats, dim=1)).view(-1, horizon, n_levels)
            base = raw[..., :1] + look[:, -1:].unsqueeze(-1)  # residual on the last value
            inc = torch.nn.functional.softplus(raw[..., 1:])
            return torch.cat([base, base + torch.cumsum(inc, dim=-1)], dim=-1)

    return _Net()


class LSTMQuantile(Forecaster):
    name = "lstm"

    def __init__(self, step_s: float = 60.0, lookback: int = 48, max_horizon_s: float = 3600.0,
                 min_horizon_steps: int = 12, max_horizon_steps: int = 60, hidden: int = 32,
                 levels: Sequence[float] = LEVELS, max_epochs: int = 40, max_train_s: float = 45.0,
                 batch_size: int = 256, lr: float = 3e-3, patience: int = 5, seed: int = 0,
                 calibrate: bool = True, val_fraction: float = 0.15,
                 max_train_samples: int = 40000, use_season: bool | None = None) -> None:
        super().__init__()
        self.step_s = float(step_s)
        self.lookback = int(lookback)
        self.max_horizon_s = float(max_horizon_s)
        self.min_horizon_steps = int(min_horizon_steps)
        self.max_horizon_steps = int(max_horizon_steps)
        self.hidden = int(hidden)
        self.levels = np.asarray(sorted(float(q) for q in levels))
        self.max_epochs = int(max_epochs)
        self.max_train_s = float(max_train_s)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.patience = int(patience)
        self.seed = int(seed)
        self.calibrate = bool(calibrate)
        self.val_fraction = float(val_fraction)
        self.max_train_samples = int(max_train_samples)
        self.use_season_opt = use_season
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self._net = None
        self._fitted = False
        self.horizon = max(self.min_horizon_steps, 1)
        self.period = 0
        self.use_season = False
        self.eps = 1e-3
        self._shift = None            # [H, Q] log-space calibration shifts
        self._ratios = _DEFAULT_RATIOS.copy()
        self._buf = np.empty(0)
        self._n_seen = 0              # steps seen since the first fitted step (for the phase)
        self.fit_info: dict = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        net = state.pop("_net", None)
        state["_net_state"] = (None if net is None else
                               {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()})
        return state

    def __setstate__(self, state: dict) -> None:
        net_state = state.pop("_net_state", None)
        self.__dict__.update(state)
        self._net = None
        if net_state is not None:
            torch = _torch()
            self._net = self._make_net()
            self._net.load_state_dict({k: torch.from_numpy(v) for k, v in net_state.items()})
            self._net.eval()

    # ------------------------------------------------------------------ geometry
    @property
    def season_len(self) -> int:
        return _SEASON_PRE + self.horizon

    @property
    def n_time(self) -> int:
        return 4

    def _need(self) -> int:
        """Steps of buffer a model prediction needs."""
        if self.use_season:
            return max(self.lookback, self.period + _SEASON_PRE)
        return self.lookback

    def _capacity(self) -> int:
        return self._need() + self.horizon + 64

    def _make_net(self):
        return _build_net(self.lookback, self.season_len, self.n_time, self.horizon,
                          self.levels.size, self.hidden)

    # ------------------------------------------------------------------ features
    def _features(self, xf: np.ndarray, origins: np.ndarray, n_offset: int):
        """Inputs for origins (indices into xf; the model has seen xf[:origin]).

        xf: forward-filled series. n_offset: absolute step index of xf[0] (for the phase).
        Returns look [N, L], season [N, S], tfeat [N, 4], loglevel [N].
        """
        L = self.lookback
        lx = np.log(xf + self.eps)
        csum = np.concatenate(([0.0], np.cumsum(xf)))
        level = (csum[origins] - csum[origins - L]) / L
        loglevel = np.log(level + self.eps)
        look = lx[origins[:, None] + np.arange(-L, 0)[None, :]] - loglevel[:, None]
        if self.use_season:
            offs = np.arange(-_SEASON_PRE, self.horizon) - self.period
            idx = origins[:, None] + offs[None, :]
            # Offsets past the origin would be the future: only possible if period < horizon,
            # and _fit_geometry disables the season then. Guard anyway.
            idx = np.minimum(idx, origins[:, None] - 1)
            season = lx[idx] - loglevel[:, None]
        else:
            season = np.zeros((origins.size, self.season_len))
        t_s = (origins + n_offset).astype(np.float64) * self.step_s
        day, week = 2 * np.pi * (t_s % DAY_S) / DAY_S, 2 * np.pi * (t_s % WEEK_S) / WEEK_S
        tfeat = np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=1)
        return look, season, tfeat, loglevel

    # ------------------------------------------------------------------ fit
    def _fit_geometry(self, n: int) -> None:
        h = int(math.ceil(self.max_horizon_s / self.step_s - 1e-9))
        self.horizon = int(min(max(h, self.min_horizon_steps, 1), self.max_horizon_steps))
        p = DAY_S / self.step_s
        self.period = int(round(p)) if abs(p - round(p)) < 1e-6 and round(p) >= 2 else 0
        can = (self.period > self.horizon
               and n >= self.period + _SEASON_PRE + self.horizon + 4 * max(self.lookback, 32))
        self.use_season = can if self.use_season_opt is None else (bool(self.use_season_opt) and can)

    def fit(self, history: np.ndarray, step_s: float) -> None:
        torch = _torch()
        t_start = time.perf_counter()
        self.step_s = float(step_s)
        self._reset_state()
        x = np.asarray(history, dtype=np.float64).ravel()
        n = x.size
        self._fit_geometry(n)
        self._n_seen = n
        self._buf = x[-self._capacity():].copy()
        valid = x[~np.isnan(x)]
        mean = float(valid.mean()) if valid.size else 0.0
        self.eps = max(0.05 * mean, 1e-3)
        xf = _ffill(x)
        first = self._need()
        origins = np.arange(first, n - 1)  # at least one target step
        if origins.size < 64 or valid.size < n * 0.2:
            self._fitted = False
            self.reason = (f"not enough training history ({n} steps, {valid.size} valid; "
                           f"need > {first + 64}): fallback to recent mean x default ratios")
            self.fit_info = {"fit_s": time.perf_counter() - t_start, "samples": int(origins.size)}
            return
        if origins.size > self.max_train_samples:
            origins = np.linspace(first, n - 2, self.max_train_samples).round().astype(int)
        look, season, tfeat, loglevel = self._features(xf, origins, 0)
        tidx = origins[:, None] + np.arange(self.horizon)[None, :]
        inside = tidx < n
        tgt = np.full(tidx.shape, np.nan)
        tgt[inside] = x[tidx[inside]]
        y = np.log(tgt + self.eps) - loglevel[:, None]       # NaN where masked / beyond the end
        # fallback ratios: distribution of (future + eps) / level over all horizons
        r = np.exp(y[~np.isnan(y)])
        if r.size >= 50:
            self._ratios = np.quantile(r, self.levels)

        n_val = int(max(32, round(origins.size * self.val_fraction)))
        if origins.size - n_val < 32:
            n_val = 0
        # a validation sample's targets must not be training targets: cut by time
        cut = origins.size - n_val
        tr_mask = np.ones(origins.size, bool)
        if n_val:
            tr_mask[cut:] = False
            tr_mask &= origins + self.horizon <= origins[cut]

        prev_threads = torch.get_num_threads()
        prev_det = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            net = self._make_net()
            tt = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
            T = {k: tt(v) for k, v in (("look", look), ("season", season), ("tfeat", tfeat))}
            Y = tt(np.nan_to_num(y, nan=0.0))
            M = tt(~np.isnan(y))
            q = tt(self.levels).view(1, 1, -1)
            tr_idx = torch.as_tensor(np.flatnonzero(tr_mask))
            va_idx = torch.as_tensor(np.arange(cut, origins.size))

            def loss_on(idx, grad: bool):
                pred = net(T["look"][idx], T["season"][idx], T["tfeat"][idx])
                err = (Y[idx].unsqueeze(-1) - pred)
                pin = torch.maximum(q * err, (q - 1.0) * err) * M[idx].unsqueeze(-1)
                return pin.sum() / (M[idx].sum().clamp(min=1.0) * self.levels.size)

            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            best, best_state, bad, epochs = math.inf, None, 0, 0
            for epoch in range(self.max_epochs):
                net.train()
                perm = tr_idx[torch.randperm(tr_idx.numel(), generator=gen)]
                for b in range(0, perm.numel(), self.batch_size):
                    opt.zero_grad()
                    loss = loss_on(perm[b:b + self.batch_size], True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                epochs = epoch + 1
                net.eval()
                with torch.inference_mode():
                    score = float(loss_on(va_idx if n_val else tr_idx, False))
                if score < best - 1e-5:
                    best, bad = score, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    bad += 1
                if bad >= self.patience or time.perf_counter() - t_start > self.max_train_s:
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
            net.eval()
            shift = np.zeros((self.horizon, self.levels.size))
            cov_before = None
            if self.calibrate and n_val >= 64:
                with torch.inference_mode():
                    pv = net(T["look"][va_idx], T["season"][va_idx], T["tfeat"][va_idx]).numpy()
                yv = y[cut:]
                res = yv[..., None] - pv                              # [N, H, Q]
                cov_before = np.nanmean(np.where(np.isnan(yv)[..., None], np.nan, res <= 0),
                                        axis=(0, 1))
                for j, lev in enumerate(self.levels):
                    for h in range(self.horizon):
                        col = res[:, h, j]
                        col = col[~np.isnan(col)]
                        if col.size >= 32:
                            shift[h, j] = np.quantile(col, lev)
                # keep the calibrated quantiles ordered (shifts can differ per level)
            self._shift = shift
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det)
        self._net = net
        self._fitted = True
        fit_s = time.perf_counter() - t_start
        self.fit_info = {"fit_s": fit_s, "epochs": epochs, "best_loss": best,
                         "samples": int(tr_mask.sum()), "val_samples": int(n_val),
                         "horizon": self.horizon, "period": self.period,
                         "use_season": self.use_season,
                         "val_coverage_before_calibration":
                             None if cov_before is None else dict(zip(self.levels.tolist(),
                                                                      np.round(cov_before, 3).tolist()))}
        self.reason = (f"lstm fitted on {n} steps ({int(tr_mask.sum())} samples, {epochs} epochs, "
                       f"{fit_s:.1f} s); H={self.horizon}, lookback={self.lookback}, "
                       f"season={'%d steps' % self.period if self.use_season else 'off'}, "
                       f"calibrated={'yes' if n_val >= 64 and self.calibrate else 'no'}")

    # ------------------------------------------------------------------ online
    def update(self, new: np.ndarray) -> None:
        new = sanitize(new)
        if new.size == 0:
            return
        self._n_seen += new.size
        cap = self._capacity()
        if self._buf.size + new.size > 2 * cap:
            self._buf = np.concatenate((self._buf[-(cap - min(cap, new.size)):], new))[-cap:]
        else:
            self._buf = np.concatenate((self._buf, new))

    def _interp(self, levq: np.ndarray, quantiles: np.ndarray) -> tuple[np.ndarray, bool]:
        """levq [H, len(levels)] -> [H, len(quantiles)], linear in the level."""
        levq = np.sort(levq, axis=1)
        clamped = bool(((quantiles < self.levels[0]) | (quantiles > self.levels[-1])).any())
        qs = np.clip(quantiles, self.levels[0], self.levels[-1])
        j = np.clip(np.searchsorted(self.levels, qs, side="right") - 1, 0, self.levels.size - 2)
        lo, hi = self.levels[j], self.levels[j + 1]
        w = np.where(hi > lo, (qs - lo) / (hi - lo), 0.0)
        return levq[:, j] * (1 - w) + levq[:, j + 1] * w, clamped

    def _fallback(self, horizon: int, quantiles: np.ndarray, why: str) -> np.ndarray:
        buf = self._buf[~np.isnan(self._buf)][-max(self.lookback, 1):]
        if buf.size == 0:
            self.reason = f"{why}; no observed steps at all: predicting 0"
            return np.zeros((horizon, quantiles.size))
        level = float(buf.mean())
        levq = np.tile(np.maximum((level + self.eps) * np.asarray(self._ratios) - self.eps, 0.0),
                       (horizon, 1))
        out, clamped = self._interp(levq, quantiles)
        self.reason = (f"{why}: fallback to mean of last {buf.size} steps x "
                       f"{'training' if self._fitted else 'default'} ratio quantiles"
                       + ("; quantiles outside the trained levels were clamped" if clamped else ""))
        return clean_quantiles(out)

    def predict(self, horizon_steps: int, quantiles: Sequence[float]) -> np.ndarray:
        quantiles = np.asarray(list(quantiles), dtype=np.float64)
        horizon_steps = int(horizon_steps)
        if horizon_steps <= 0:
            return np.zeros((0, quantiles.size))
        try:
            if not self._fitted or self._net is None:
                return self._fallback(horizon_steps, quantiles, "not fitted")
            need = self._need()
            n_valid = int((~np.isnan(self._buf[-need:])).sum()) if self._buf.size else 0
            if self._buf.size < need or n_valid < max(1, self.lookback // 4):
                return self._fallback(
                    horizon_steps, quantiles,
                    f"history shorter than the lookback ({self._buf.size} steps, {n_valid} valid; "
                    f"need {need})")
            torch = _torch()
            xf = _ffill(self._buf[-need:])
            origin = np.array([xf.size])
            look, season, tfeat, loglevel = self._features(xf, origin, self._n_seen - xf.size)
            # One intra-op thread: a batch-1 pass is ~1 ms; a thread pool competing with other
            # busy threads (BLAS, other processes) made it ~50 ms. Switching costs < 1 us.
            prev_threads = torch.get_num_threads()
            if prev_threads != 1:
                torch.set_num_threads(1)
            try:
                with torch.inference_mode():
                    z = self._net(torch.as_tensor(look, dtype=torch.float32),
                                  torch.as_tensor(season, dtype=torch.float32),
                                  torch.as_tensor(tfeat, dtype=torch.float32))[0].numpy()
            finally:
                if prev_threads != 1:
                    torch.set_num_threads(prev_threads)
            z = z.astype(np.float64)
            if self._shift is not None:
                z = z + self._shift
            levq = np.exp(z + loglevel[0]) - self.eps
            out, clamped = self._interp(levq, quantiles)
            if horizon_steps > self.horizon:
                out = np.vstack([out, np.repeat(out[-1:], horizon_steps - self.horizon, axis=0)])
            else:
                out = out[:horizon_steps]
            notes = []
            recent_nan = int(np.isnan(self._buf[-self.lookback:]).sum())
            if recent_nan:
                notes.append(f"{recent_nan} of the last {self.lookback} steps missing (forward-filled)")
            if horizon_steps > self.horizon:
                notes.append(f"steps beyond {self.horizon} repeat the last trained step")
            if clamped:
                notes.append("quantiles outside the trained levels were clamped")
            self.reason = "lstm" + (": " + "; ".join(notes) if notes else "")
            return clean_quantiles(out)
        except Exception as exc:  # never raise from predict
            return self._fallback(horizon_steps, quantiles, f"lstm predict failed ({exc!r})")
