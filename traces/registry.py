"""Trace names -> loaders, and the catalogue shown by `spillway traces list`.

``load_trace(name_or_path)`` accepts a known name (see ``list_traces()``) or a path to a user
file (formats in ``traces.userfiles``). Anything that is neither gives a one-line
``TraceError`` listing the known names.

Synthetic names and their defaults (1 day, mean about 100 req/s, seed 0):
  synthetic:poisson      constant 100 req/s, 1 s bins
  synthetic:diurnal      mean 100 req/s, peak/mean 2, noise CV 0.05, 60 s bins
  synthetic:flash-crowd  100 req/s base, 1,000 req/s peak at 12:00 (5 min ramp, 15 min hold,
                         30 min decay constant)
  synthetic:mmpp         rates (60, 220) req/s, leave rates (1/300, 1/100) per s -> mean 100
  synthetic:on-off       260 req/s on (mean 120 s), 20 req/s off (mean 240 s) -> mean 100
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from traces import sources, synthetic
from traces.errors import TraceError
from traces.model import Trace
from traces.paths import raw_dir
from traces.userfiles import SUFFIXES, load_user_file

DAY_S = 86400.0


@dataclass(frozen=True)
class TraceInfo:
    name: str
    kind: str
    span: str
    resolution: str
    available: bool
    description: str


@dataclass(frozen=True)
class _Entry:
    loader: Callable[[], Trace]
    kind: str
    span: str
    resolution: str
    description: str
    raw_file: str | None = None  # relative to raw_dir(); None = bundled or synthetic


_SERVEGEN_FILE = "alibaba_servegen_2025/derived_total_rate_per_10min.csv"

_ENTRIES: dict[str, _Entry] = {
    "default": _Entry(sources.load_wikipedia, "web (bundled)", "31 days", "1 h",
                      "alias of 'wikipedia'"),
    "wikipedia": _Entry(sources.load_wikipedia, "web (bundled)", "31 days", "1 h",
                        "en.wikipedia page requests, Jan 2016; mean 2,067 req/s, smooth diurnal + weekly"),
    "azure-code": _Entry(lambda: sources.load_azure("code"), "LLM inference (bundled)", "57 min",
                         "per request", "Azure LLM 2023 code; 2.57 req/s, very bursty (1-min peak/mean 4.1)"),
    "azure-conv": _Entry(lambda: sources.load_azure("conv"), "LLM inference (bundled)", "58 min",
                         "per request", "Azure LLM 2023 conversation; 5.53 req/s, smooth"),
    "twitter": _Entry(sources.load_twitter, "tweet arrivals", "22 days", "1 s",
                      "Twitter 1% stream Aug 2021; 63.6 req/s, diurnal 3.9x; daily 29-min gap masked",
                      "twitter_stream_2021_08/workload.tbz2"),
    "nasa": _Entry(sources.load_nasa, "web", "58.6 days", "1 s",
                   "NASA KSC web server 1995; 0.68 req/s, spiky; outage masked, splice noted",
                   "nasa_http_1995/workload.tbz2"),
    "mooncake": _Entry(sources.load_mooncake, "LLM inference", "59 min", "per request",
                       "Mooncake/Kimi conversation trace; 3.40 req/s, smooth per minute",
                       "mooncake_fast25/conversation_trace.jsonl"),
}
_SERVEGEN_INFO = {
    "m-large": ("14 days", "mean 196 req/s, mild diurnal"),
    "m-mid": ("14 days", "mean 1,790 req/s, mild diurnal; 14 h gap masked"),
    "m-small": ("14 days", "mean 1,174 req/s, diurnal 2.2x; gaps masked"),
    "deepseek-r1": ("1 day", "mean 16 req/s, diurnal 4.9x"),
    "mm-image": ("1 day", "mean 9.5 req/s"),
}
for _model, (_span, _desc) in _SERVEGEN_INFO.items():
    _ENTRIES[f"servegen-{_model}"] = _Entry(
        (lambda m=_model: sources.load_servegen(m)), "LLM API (rates)", _span, "10 min (rates)",
        f"ServeGen {_model} (Alibaba Bailian); {_desc}", _SERVEGEN_FILE)

_SYNTHETIC: dict[str, tuple[Callable[[], Trace], str, str]] = {
    "synthetic:poisson": (lambda: synthetic.poisson_trace(100.0, DAY_S), "1 s",
                          "constant 100 req/s Poisson"),
    "synthetic:diurnal": (lambda: synthetic.diurnal(100.0, 2.0, DAY_S), "1 min",
                          "mean 100 req/s, peak/mean 2, 5% noise"),
    "synthetic:flash-crowd": (lambda: synthetic.flash_crowd(100.0, 1000.0, 43200.0, 300.0, 900.0, 1800.0, DAY_S),
                              "1 s", "100 req/s with a 10x surge at 12:00"),
    "synthetic:mmpp": (lambda: synthetic.mmpp2((60.0, 220.0), (1 / 300, 1 / 100), DAY_S, seed=0),
                       "per request", "2-state MMPP, 60/220 req/s, mean 100"),
    "synthetic:on-off": (lambda: synthetic.on_off(260.0, 20.0, 120.0, 240.0, DAY_S, seed=0),
                         "per request", "on/off bursts 260/20 req/s, mean 100"),
}
for _name, (_loader, _res, _desc) in _SYNTHETIC.items():
    _ENTRIES[_name] = _Entry(_loader, "synthetic", "1 day", _res, _desc)


def known_names() -> list[str]:
    return list(_ENTRIES)


def _available(entry: _Entry) -> bool:
    return entry.raw_file is None or (raw_dir() / entry.raw_file).is_file()


def list_traces() -> list[TraceInfo]:
    return [TraceInfo(name, e.kind, e.span, e.resolution, _available(e), e.description)
            for name, e in _ENTRIES.items()]


def _looks_like_path(arg: str) -> bool:
    return ("/" in arg or "\\" in arg or Path(arg).suffix.lower() in SUFFIXES
            or Path(arg).exists())


def load_trace(name_or_path: str) -> Trace:
    """A named trace (bundled, shared raw, or synthetic) or a user file."""
    arg = str(name_or_path).strip()
    entry = _ENTRIES.get(arg) or _ENTRIES.get(arg.lower())
    if entry is not None:
        trace = entry.loader()
        if arg.lower() == "default":
            trace = trace.with_changes(add_note="loaded as 'default' (bundled Wikipedia trace)")
        return trace
    if not arg:
        raise TraceError("trace", "empty trace name")
    if _looks_like_path(arg):
        return load_user_file(arg)
    raise TraceError(arg, f"unknown trace name (known: {', '.join(known_names())}; or give a path "
                          f"to a {'/'.join(SUFFIXES)} file)")
