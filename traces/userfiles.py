"""Load a user's own trace file.

Accepted formats (times in seconds, counts are non-negative integers):

* ``.csv`` -- comma-separated, header optional.
  - Header with a ``timestamp_s`` column: one row per request, that column is used.
  - Header with a ``count`` column: per-bin counts; an optional ``bin_s`` column gives the
    bin width (it must hold one value throughout; default 1 s).
  - Header with a single column of any name, or no header: the first column holds
    per-request timestamps.
  - A header with several columns, none named ``timestamp_s`` or ``count``, is rejected.
* ``.txt`` -- per-second counts: integers separated by spaces and/or newlines (the
  NASA/Twitter ``workload.txt`` format).
* ``.json`` -- a list of numbers (per-request timestamps), or an object with either
  ``"timestamps_s": [...]`` or ``"counts": [...]`` and optional ``"bin_s"`` (default 1).
* ``.jsonl`` -- one request per line: a number, or an object with ``"timestamp_s"``.

Timestamps must be sorted and non-negative. t=0 is time 0 of the file, except when the
first timestamp looks like Unix time (> 1e9 s, i.e. after 2001): then t=0 is the first
request and ``start`` is set from it. A per-request trace lasts until the second after its
last request (``floor(last) + 1``).

Every problem raises ``TraceError('<file>: <problem>')`` on one line.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from traces.errors import TraceError
from traces.model import Trace

SUFFIXES = (".csv", ".txt", ".json", ".jsonl")
UNIX_EPOCH_THRESHOLD_S = 1e9


def load_user_file(path_str: str) -> Trace:
    path = Path(path_str).expanduser()
    where = str(path_str)
    if not path.exists():
        raise TraceError(where, "file not found")
    if path.is_dir():
        raise TraceError(where, "is a directory, not a trace file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TraceError(where, f"unsupported file type '{suffix or '(none)'}' (use {', '.join(SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate an Excel BOM
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(where, f"cannot read ({e.__class__.__name__})") from None
    if not text.strip():
        raise TraceError(where, "empty file")
    if suffix == ".csv":
        kind, values, bin_s = _parse_csv(where, text)
    elif suffix == ".txt":
        kind, values, bin_s = "counts", _parse_txt(where, text), 1.0
    elif suffix == ".json":
        kind, values, bin_s = _parse_json(where, text)
    else:
        kind, values, bin_s = "timestamps", _parse_jsonl(where, text), None
    name = path.name
    source = f"user file {path.resolve()}"
    if kind == "counts":
        _check_counts(where, values)
        return Trace(name=name, source=source, licence="unknown (user file)", start="",
                     duration_s=values.size * bin_s, bin_s=bin_s, counts=values)
    return _timestamps_trace(where, name, source, values)


# ---------------------------------------------------------------- value checks
def _numeric(where: str, cells: list[str], first_line: int, what: str) -> np.ndarray:
    """Strings -> float64, naming the line of the first NaN/missing or non-numeric cell."""
    s = pd.Series(cells, dtype=object).astype(str).str.strip()
    vals = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
    bad = np.isnan(vals)
    if bad.any():
        i = int(np.argmax(bad))
        cell = s.iloc[i]
        if cell.lower() in ("", "nan", "na", "null", "none"):
            raise TraceError(where, f"NaN or missing {what} at line {first_line + i}")
        raise TraceError(where, f"non-numeric {what} {cell[:30]!r} at line {first_line + i}")
    if np.isinf(vals).any():
        raise TraceError(where, f"infinite {what} at line {first_line + int(np.argmax(np.isinf(vals)))}")
    if (vals < 0).any():
        i = int(np.argmax(vals < 0))
        raise TraceError(where, f"negative {what} {vals[i]:g} at line {first_line + i}")
    return vals


def _check_counts(where: str, counts: np.ndarray) -> None:
    if counts.size == 0:
        raise TraceError(where, "empty (no counts)")
    frac = counts != np.floor(counts)
    if frac.any():
        raise TraceError(where, f"non-integer count {counts[np.argmax(frac)]:g} (entry {int(np.argmax(frac)) + 1})")
    if counts.sum() == 0:
        raise TraceError(where, "all counts are zero (no requests)")


def _timestamps_trace(where: str, name: str, source: str, ts: np.ndarray) -> Trace:
    if ts.size == 0:
        raise TraceError(where, "empty (no requests)")
    d = np.diff(ts)
    if (d < 0).any():
        i = int(np.argmax(d < 0))
        raise TraceError(where, f"timestamps not sorted (request {i + 2}: {ts[i + 1]:g} < {ts[i]:g})")
    start, notes = "", ()
    if ts[0] > UNIX_EPOCH_THRESHOLD_S:
        start = datetime.fromtimestamp(float(ts[0]), tz=timezone.utc).isoformat()
        ts = ts - ts[0]
        notes = ("Unix timestamps: t=0 set to the first request",)
    return Trace(name=name, source=source, licence="unknown (user file)", start=start,
                 duration_s=math.floor(ts[-1]) + 1.0, arrivals_s=ts, notes=notes)


# ---------------------------------------------------------------- parsers
def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return cell.strip().lower() in ("nan", "")


def _parse_csv(where: str, text: str):
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    first_cells = [c.strip() for c in lines[0][1].split(",")]
    has_header = not all(_is_number(c) for c in first_cells)
    header = [c.lower() for c in first_cells] if has_header else None
    body = lines[1:] if has_header else lines
    if not body:
        raise TraceError(where, "empty (header but no data rows)")
    ncol = len(first_cells)
    rows = []
    for lineno, ln in body:
        cells = ln.split(",")
        if len(cells) != ncol:
            raise TraceError(where, f"wrong number of columns at line {lineno}: expected {ncol}, found {len(cells)}")
        rows.append(cells)
    first_line = body[0][0]

    def column(j: int) -> list[str]:
        return [r[j] for r in rows]

    if header is not None and "count" in header:
        counts = _numeric(where, column(header.index("count")), first_line, "count")
        bin_s = 1.0
        if "bin_s" in header:
            bins = _numeric(where, column(header.index("bin_s")), first_line, "bin_s")
            if np.any(bins != bins[0]) or bins[0] <= 0:
                raise TraceError(where, "bin_s column must hold one positive value throughout")
            bin_s = float(bins[0])
        return "counts", counts, bin_s
    if header is not None and "timestamp_s" in header:
        j = header.index("timestamp_s")
    elif header is not None and ncol > 1:
        raise TraceError(where, f"wrong columns: expected a column named timestamp_s or count, found {', '.join(header)}")
    else:
        j = 0
    return "timestamps", _numeric(where, column(j), first_line, "timestamp"), None


def _parse_txt(where: str, text: str) -> np.ndarray:
    cells, linenos = [], []
    for i, ln in enumerate(text.splitlines()):
        for tok in ln.split():
            cells.append(tok)
            linenos.append(i + 1)
    try:
        return _numeric(where, cells, 1, "count")
    except TraceError as e:  # map token position back to a line number
        msg = str(e)
        if " at line " in msg:
            head, pos = msg.rsplit(" at line ", 1)
            raise TraceError(f"{head} at line {linenos[int(pos) - 1]}") from None
        raise


def _parse_json(where: str, text: str):
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(where, f"invalid JSON at line {e.lineno}: {e.msg}") from None
    if isinstance(obj, list):
        return "timestamps", _json_numbers(where, obj, "timestamp"), None
    if isinstance(obj, dict):
        if "timestamps_s" in obj:
            return "timestamps", _json_numbers(where, obj["timestamps_s"], "timestamp"), None
        if "counts" in obj:
            bin_s = obj.get("bin_s", 1.0)
            if not isinstance(bin_s, (int, float)) or not bin_s > 0:
                raise TraceError(where, f"bin_s must be a positive number, got {bin_s!r}")
            return "counts", _json_numbers(where, obj["counts"], "count"), float(bin_s)
        raise TraceError(where, f"wrong keys: expected timestamps_s or counts, found {', '.join(map(str, obj)) or 'none'}")
    raise TraceError(where, "expected a JSON list or object")


def _json_numbers(where: str, values, what: str) -> np.ndarray:
    if not isinstance(values, list):
        raise TraceError(where, f"{what}s must be a list")
    if not values:
        raise TraceError(where, f"empty (no {what}s)")
    for i, v in enumerate(values):
        if v is None:
            raise TraceError(where, f"NaN or missing {what} at entry {i + 1}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TraceError(where, f"non-numeric {what} {str(v)[:30]!r} at entry {i + 1}")
    vals = np.asarray(values, dtype=np.float64)
    if np.isnan(vals).any():
        raise TraceError(where, f"NaN {what} at entry {int(np.argmax(np.isnan(vals))) + 1}")
    if (vals < 0).any():
        raise TraceError(where, f"negative {what} at entry {int(np.argmax(vals < 0)) + 1}")
    return vals


def _parse_jsonl(where: str, text: str) -> np.ndarray:
    out = []
    for i, ln in enumerate(text.splitlines()):
        if not ln.strip():
            continue
        try:
            v = json.loads(ln)
        except json.JSONDecodeError:
            raise TraceError(where, f"invalid JSON at line {i + 1}") from None
        if isinstance(v, dict):
            if "timestamp_s" not in v:
                raise TraceError(where, f"line {i + 1}: missing key timestamp_s")
            v = v["timestamp_s"]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise TraceError(where, f"NaN or missing timestamp at line {i + 1}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TraceError(where, f"non-numeric timestamp {str(v)[:30]!r} at line {i + 1}")
        if v < 0:
            raise TraceError(where, f"negative timestamp at line {i + 1}")
        out.append(float(v))
    return np.asarray(out, dtype=np.float64)
