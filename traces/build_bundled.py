"""Regenerate the bundled traces in traces/data/ from ../shared/traces/raw.

Run:  python -m traces.build_bundled            (or: python traces/build_bundled.py)

Outputs (np.savez_compressed, exact):
* wikipedia_en_2016_01_hourly.npz  sum_req per hour as int64 (744 values, sorted by timestamp),
  start_unix_s (first hour, UTC).
* azure_llm_2023_code.npz / azure_llm_2023_conv.npz  per-request offsets from the first request
  in integer milliseconds, stored delta-encoded as uint32 (the deltas are small and repeat a
  lot, so they compress far better than absolute offsets); start_iso = wall time of request 0.
  Rounding each offset to the nearest ms keeps the order (rounding is monotone).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # allow `python traces/build_bundled.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from traces.paths import DATA_DIR, raw_dir  # noqa: E402

WIKI_FILE = "wikipedia_en_2016_01/1-2016_1-2016_hourly_summary_no_clean.csv"
AZURE_FILE = "azure_llm_2023/AzureLLMInferenceTrace_{}.csv"


def build_wikipedia(raw: Path, out: Path) -> Path:
    df = pd.read_csv(raw / WIKI_FILE, sep=" ").sort_values("timestamp")
    ts = df["timestamp"].to_numpy(np.float64)
    sum_req = df["sum_req"].to_numpy(np.float64)
    assert np.all(np.diff(ts) == 3600), "Wikipedia hours are not contiguous"
    assert np.all(sum_req == np.round(sum_req)), "sum_req is not integral"
    path = out / "wikipedia_en_2016_01_hourly.npz"
    np.savez_compressed(path, sum_req=sum_req.astype(np.int64), start_unix_s=np.int64(ts[0]))
    return path


def build_azure(raw: Path, out: Path, which: str) -> Path:
    df = pd.read_csv(raw / AZURE_FILE.format(which), usecols=["TIMESTAMP"])
    t = pd.to_datetime(df["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f")
    ns = (t.astype("int64") - t.astype("int64").iloc[0]).to_numpy()  # exact integer ns
    offsets_ms = (ns + 500_000) // 1_000_000  # round half up to the nearest ms
    assert np.all(np.diff(offsets_ms) >= 0)
    deltas = np.diff(offsets_ms, prepend=0).astype(np.uint32)
    path = out / f"azure_llm_2023_{which}.npz"
    np.savez_compressed(path, delta_ms=deltas, start_iso=np.str_(t.iloc[0].isoformat()))
    return path


def main() -> None:
    raw = raw_dir()
    DATA_DIR.mkdir(exist_ok=True)
    for p in (build_wikipedia(raw, DATA_DIR), build_azure(raw, DATA_DIR, "code"),
              build_azure(raw, DATA_DIR, "conv")):
        print(f"{p} {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
