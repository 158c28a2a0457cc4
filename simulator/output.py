"""A run directory: summary.json, timeseries.csv, latency_hist.csv and the config used."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from controller.config import Config, to_toml
from simulator.engine import SimResult
from simulator.histogram import PATHS, edges_ms


def write_run(result: SimResult, cfg: Config, out_dir: str | Path, extra: dict | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(result.summary)
    summary.update(extra or {})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    result.series.to_csv(out / "timeseries.csv", index=False, float_format="%.10g")
    edges = edges_ms()
    used = np.flatnonzero(result.hist.sum(axis=0))
    hist = {"lo_ms": edges[used], "hi_ms": edges[used + 1]}
    hist.update({name: result.hist[p, used] for p, name in enumerate(PATHS)})
    pd.DataFrame(hist).to_csv(out / "latency_hist.csv", index=False, float_format="%.10g")
    (out / "config.toml").write_text(to_toml(cfg))
    return out
