"""Loaders for the named real traces (bundled in traces/data/, or raw files in ../shared).

Every loader returns a validated ``Trace``. Formats and caveats are those documented in
``../shared/traces/SOURCES.md``; the short version is repeated next to each loader.
"""
from __future__ import annotations

import json
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from traces.errors import TraceError
from traces.model import Trace
from traces.paths import DATA_DIR, cache_dir, raw_dir

# ---------------------------------------------------------------- citations
WIKI_SOURCE = ("sgomezsaez/SCARF-Evaluation wikipedia_workload/data/"
               "1-2016_1-2016_hourly_summary_no_clean.csv (Wikimedia pagecounts-raw, project en)")
WIKI_LICENCE = "Apache-2.0 (SCARF-Evaluation repo); underlying Wikimedia page-count dumps are open data"
AZURE_SOURCE = ("Azure/AzurePublicDataset AzureLLMInferenceTrace_{} (Patel et al., 'Splitwise: "
                "Efficient generative LLM inference using phase splitting', ISCA 2024)")
AZURE_LICENCE = "CC-BY-4.0"
TWITTER_SOURCE = ("reconfigurable-ml-pipeline/web-service-datasets dataset/twitter_trace/workload.tbz2 "
                  "(ArchiveTeam twitter-stream-2021-08, 1% sample stream)")
NASA_SOURCE = ("reconfigurable-ml-pipeline/web-service-datasets dataset/nasa/workload.tbz2 "
               "(Internet Traffic Archive NASA-HTTP, KSC WWW server Jul-Aug 1995)")
NO_LICENCE = "no licence file in source repo; aggregate counts only, verify before redistribution"
MOONCAKE_SOURCE = ("kvcache-ai/Mooncake FAST25-release/traces/conversation_trace.jsonl "
                   "(Qin et al., 'Mooncake', USENIX FAST 2025)")
SERVEGEN_SOURCE = ("alibaba/ServeGen per-client traces, summed per model into "
                   "derived_total_rate_per_10min.csv (Xiang et al., arXiv 2505.09999)")

# A zero run this long (10 min) is a data gap, not quiet traffic: outside its daily gap,
# Twitter has zero counts in only 0.07 % of seconds, and never 600 in a row.
MIN_GAP_S = 600


# ---------------------------------------------------------------- helpers
def zero_runs(counts: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of runs of zeros at least min_len long (vectorised)."""
    is_zero = np.concatenate(([False], counts == 0, [False]))
    change = np.flatnonzero(np.diff(is_zero.astype(np.int8)))
    starts, ends = change[0::2], change[1::2]
    keep = (ends - starts) >= min_len
    return list(zip(starts[keep].tolist(), ends[keep].tolist()))


def _require(path: Path, name: str) -> Path:
    if not path.is_file():
        raise TraceError(name, f"raw file not found at {path} (set SPILLWAY_SHARED_DIR)")
    return path


# ---------------------------------------------------------------- bundled
def load_wikipedia() -> Trace:
    """Hourly sum_req of en.wikipedia, January 2016 (744 h), bundled."""
    with np.load(DATA_DIR / "wikipedia_en_2016_01_hourly.npz") as z:
        counts = z["sum_req"].astype(np.float64)
        start_unix_s = int(z["start_unix_s"])
    start = datetime.fromtimestamp(start_unix_s, tz=timezone.utc).isoformat()
    return Trace(
        name="wikipedia", source=WIKI_SOURCE, licence=WIKI_LICENCE, start=start,
        duration_s=counts.size * 3600.0, bin_s=3600.0, counts=counts,
        notes=("hourly resolution only: within an hour requests are spread uniformly",),
    )


def load_azure(which: str) -> Trace:
    """Azure LLM inference 2023 per-request timestamps ('code' or 'conv'), bundled at ms precision."""
    with np.load(DATA_DIR / f"azure_llm_2023_{which}.npz") as z:
        offsets_ms = np.cumsum(z["delta_ms"].astype(np.int64))
        start = str(z["start_iso"])
    arrivals_s = offsets_ms / 1000.0
    return Trace(
        name=f"azure-{which}", source=AZURE_SOURCE.format(which), licence=AZURE_LICENCE,
        start=start,  # wall clock as recorded; time zone not stated by the source
        duration_s=float(np.floor(arrivals_s[-1]) + 1.0), arrivals_s=arrivals_s,
        notes=("timestamps rounded to 1 ms; t=0 is the first request",),
    )


# ---------------------------------------------------------------- Twitter / NASA
def read_workload_tbz2(path: Path) -> np.ndarray:
    """Per-second counts from workload.tbz2 (one line of space-separated ints), cached.

    Parsing 1.9 M ints from bzip2 takes ~0.7 s; the .npy cache (keyed by the source's size
    and mtime, so a changed file is re-read) loads in a few ms.
    """
    st = path.stat()
    tag = path.parent.name
    cache = cache_dir() / f"{tag}-workload-{st.st_size}-{st.st_mtime_ns}.npy"
    if cache.is_file():
        try:
            return np.load(cache)
        except (OSError, ValueError):
            pass  # corrupt cache: fall through and re-parse
    try:
        with tarfile.open(path, mode="r:bz2") as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith("workload.txt")), None)
            if member is None:
                raise TraceError(str(path), "no workload.txt inside the archive")
            text = tf.extractfile(member).read()
        counts = np.array(text.split(), dtype=np.int64)
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise TraceError(str(path), f"cannot read archive ({e.__class__.__name__}: {e})") from None
    try:  # cache is an optimisation: never fail a load because it cannot be written
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, counts)
        os.replace(tmp, cache)
    except OSError:
        pass
    return counts


def _masks_from_zero_runs(counts: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(a), float(b)) for a, b in zero_runs(counts, MIN_GAP_S))


def load_twitter() -> Trace:
    """Twitter 1% stream, Aug 2021, per-second counts (22 days).

    Every day has a 1,739 s zero run at offsets 84,661 + k*86,400 (capture artifact); these
    are masked. The generic >= 10 min zero-run rule finds exactly those runs.
    """
    path = _require(raw_dir() / "twitter_stream_2021_08" / "workload.tbz2", "twitter")
    counts = read_workload_tbz2(path)
    return Trace(
        name="twitter", source=TWITTER_SOURCE, licence=NO_LICENCE,
        start="",  # not stored; most likely 2021-08-01T00:00:00Z
        duration_s=float(counts.size), bin_s=1.0, counts=counts.astype(np.float64),
        masked=_masks_from_zero_runs(counts),
        notes=("start not stored (most likely 2021-08-01 00:00 UTC)",
               "masked: daily 1,739 s zero runs at 84,661 + k*86,400 s (capture artifact)"),
    )


NASA_SPLICE_INDEX = 2_381_545  # first second of the August log


def load_nasa() -> Trace:
    """NASA KSC web server, Jul-Aug 1995, per-second counts (58.6 days, EDT).

    The July log ends 1995-07-28 13:32:25 and the August log (from 08-01 00:00:01) follows
    directly, so wall-clock time after index 2,381,545 is 3 d 10 h 27 min 36 s later than
    t suggests. The 37.7 h outage (index 2,435,065, 135,851 s of zeros) and ~20 other zero
    runs >= 10 min are masked.
    """
    path = _require(raw_dir() / "nasa_http_1995" / "workload.tbz2", "nasa")
    counts = read_workload_tbz2(path)
    return Trace(
        name="nasa", source=NASA_SOURCE, licence=NO_LICENCE + "; attribute ITA/NASA",
        start="1995-07-01T00:00:01-04:00",
        duration_s=float(counts.size), bin_s=1.0, counts=counts.astype(np.float64),
        masked=_masks_from_zero_runs(counts),
        notes=(f"splice at t={NASA_SPLICE_INDEX} s: July log (ends 1995-07-28 13:32:25 EDT) is "
               "followed directly by the August log (from 1995-08-01 00:00:01); 3 d 10 h 27 min "
               "36 s of wall time are missing there",
               "masked: 37.7 h server outage from t=2,435,065 s and zero runs >= 10 min"),
    )


# ---------------------------------------------------------------- Mooncake
def load_mooncake() -> Trace:
    """Mooncake FAST'25 conversation trace: JSONL, 'timestamp' in ms from the start."""
    path = _require(raw_dir() / "mooncake_fast25" / "conversation_trace.jsonl", "mooncake")
    ts_ms = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                ts_ms.append(json.loads(line)["timestamp"])
    arrivals_s = np.asarray(ts_ms, dtype=np.float64) / 1000.0
    return Trace(
        name="mooncake", source=MOONCAKE_SOURCE, licence="Apache-2.0 (repo; no separate data licence)",
        start="", duration_s=float(np.floor(arrivals_s[-1]) + 1.0), arrivals_s=arrivals_s,
        notes=("sampled from one hour of Kimi online requests; timestamps in ms",),
    )


# ---------------------------------------------------------------- ServeGen
SERVEGEN_MODELS = ("m-large", "m-mid", "m-small", "deepseek-r1", "mm-image")
SERVEGEN_WINDOW_S = 600.0


def load_servegen(model: str) -> Trace:
    """ServeGen aggregate rate per 10-min window for one model.

    The file gives mean req/s per window, so counts = rate * 600 are *expected* counts
    (counts_are_rates=True): 195.8 req/s -> 117,480 expected requests per window. Trailing
    NaN windows (1-day models in a 14-day file) are cut off; all-zero or interior-NaN windows
    are collection gaps and are masked (set to 0).
    """
    name = f"servegen-{model}"
    path = _require(raw_dir() / "alibaba_servegen_2025" / "derived_total_rate_per_10min.csv", name)
    df = pd.read_csv(path)
    if model not in df.columns:
        raise TraceError(str(path), f"no column {model!r}")
    df = df.sort_values("window_start_s")
    rate = df[model].to_numpy(np.float64)
    valid = np.flatnonzero(~np.isnan(rate))
    rate = rate[: valid[-1] + 1]
    gap = np.isnan(rate) | (rate == 0)
    rate = np.where(gap, 0.0, rate)
    masked = [(a * SERVEGEN_WINDOW_S, b * SERVEGEN_WINDOW_S) for a, b in zero_runs(np.where(gap, 0, 1), 1)]
    return Trace(
        name=name, source=SERVEGEN_SOURCE, licence="Apache-2.0", start="",
        duration_s=rate.size * SERVEGEN_WINDOW_S, bin_s=SERVEGEN_WINDOW_S,
        counts=rate * SERVEGEN_WINDOW_S, counts_are_rates=True, masked=masked,
        notes=("10-min mean rates of the top clients only; sub-10-min arrivals are Poisson",
               "masked: all-zero windows (collection gaps)" if masked else "no gaps"),
    )
