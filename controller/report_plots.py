"""Plot helpers for the run report (``controller.report``).

Every function takes already-validated data and returns PNG bytes.  Figures are built with
the object-oriented ``matplotlib.figure.Figure`` API and rendered with the Agg canvas, so
nothing here touches pyplot or the process-wide matplotlib backend.

All time-series figures use the same width and the same fixed left/right margins, so their
x-axes line up when stacked on the page; legends sit in the right-hand margin, off the data.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIG_WIDTH_IN = 11.0
DPI = 100
# Fixed axes margins (fractions of the figure) shared by every time-series figure.
LEFT, RIGHT = 0.075, 0.785

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
}

C_OFFERED = "#111111"
C_CAPACITY = "#2b8a3e"
C_INSTANCE = "#74a9cf"
C_FUNCTION = "#f59f00"
C_FUNCTION_COLD = "#e8590c"
C_LOST = "#c92a2a"
C_IAAS = "#4c72b0"
C_FAAS = "#f59f00"
C_SLO = "#c92a2a"
PATH_COLORS = {"instance": "#4c72b0", "function_warm": "#f59f00", "function_cold": "#e8590c"}


@dataclass(frozen=True)
class TimeAxis:
    """How elapsed seconds are shown on the x-axis of every time-series plot."""

    divisor: float
    label: str
    lo: float  # x-limits, already in display units
    hi: float


def time_axis(span_s: float) -> TimeAxis:
    """Hours for runs longer than 2 h, minutes above 10 min, otherwise seconds."""
    span_s = max(float(span_s), 1e-9)
    if span_s > 2 * 3600:
        div, unit = 3600.0, "h"
    elif span_s > 600:
        div, unit = 60.0, "min"
    else:
        div, unit = 1.0, "s"
    return TimeAxis(div, f"time since run start ({unit})", 0.0, span_s / div)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/URL metadata in the PNG: the page must reference no external address.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _legend_right(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, borderaxespad=0.0, **kw)


def _time_fig(height_in: float, nrows: int = 1, height_ratios=None, hspace: float = 0.12):
    fig = Figure(figsize=(FIG_WIDTH_IN, height_in))
    axes = fig.subplots(nrows, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": height_ratios} if height_ratios else None)
    bottom = 0.55 / height_in  # room for tick labels + axis label, constant in inches
    top = 1.0 - 0.15 / height_in
    fig.subplots_adjust(left=LEFT, right=RIGHT, bottom=bottom, top=top, hspace=hspace)
    return fig, [row[0] for row in axes]


def _setup_x(ax, tx: TimeAxis, label: bool = True) -> None:
    ax.set_xlim(tx.lo, tx.hi)
    ax.margins(x=0)
    if label:
        ax.set_xlabel(tx.label)


def _x(ts: pd.DataFrame, tx: TimeAxis) -> np.ndarray:
    """Interval mid-points in display units."""
    return (ts["elapsed_s"].to_numpy() + 0.5 * ts["interval_s"].to_numpy()) / tx.divisor


def _rate(ts: pd.DataFrame, col) -> np.ndarray:
    dt = ts["interval_s"].to_numpy(dtype=float)
    if isinstance(col, str):
        v = ts[col].to_numpy(dtype=float)
    else:
        v = sum(ts[c].to_numpy(dtype=float) for c in col)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dt > 0, v / np.where(dt > 0, dt, 1.0), 0.0)


def plot_load(ts: pd.DataFrame, tx: TimeAxis) -> bytes:
    """(a) Offered load vs ready IaaS capacity; served traffic stacked by path underneath."""
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _time_fig(3.8)
        x = _x(ts, tx)
        inst = _rate(ts, "served_instance")
        warm = _rate(ts, "served_function_warm")
        cold = _rate(ts, "served_function_cold")
        lost = _rate(ts, ["dropped", "throttled"])
        y0 = np.zeros_like(inst)
        ax.fill_between(x, y0, inst, color=C_INSTANCE, alpha=0.55, lw=0,
                        label="served: instances" if inst.any() else None)
        if warm.any():
            ax.fill_between(x, inst, inst + warm, color=C_FUNCTION, alpha=0.75, lw=0,
                            label="served: functions, warm")
        if cold.any():
            ax.fill_between(x, inst + warm, inst + warm + cold, color=C_FUNCTION_COLD,
                            alpha=0.85, lw=0, label="served: functions, cold")
        if lost.any():
            top = inst + warm + cold
            ax.fill_between(x, top, top + lost, color=C_LOST, alpha=0.8, lw=0,
                            label="dropped / throttled")
        if "offered_rps_max" in ts.columns:
            ax.plot(x, ts["offered_rps_max"].to_numpy(float), color=C_OFFERED, lw=0.6,
                    alpha=0.35, label="offered (peak in bin)")
        ax.plot(x, ts["offered_rps"].to_numpy(float), color=C_OFFERED, lw=1.1,
                label="offered load")
        ax.plot(x, ts["capacity_rps"].to_numpy(float), color=C_CAPACITY, lw=1.4, ls="--",
                label="IaaS capacity (ready)")
        ax.set_ylabel("requests / s")
        # Keep the load readable when capacity has a brief extreme spike (e.g. a large initial
        # fleet): if capacity peaks far above both the load and its 95th percentile, clip it.
        cap = ts["capacity_rps"].to_numpy(float)
        served_top = inst + warm + cold + lost
        data_top = max(np.nanmax(ts["offered_rps"].to_numpy(float)), np.nanmax(served_top), 0.0)
        cap_top = float(np.nanmax(cap)) if cap.size else 0.0
        y_top = max(data_top, float(np.nanpercentile(cap, 95)) if cap.size else 0.0) * 1.25
        if cap_top > 2 * y_top > 0:
            ax.set_ylim(0, y_top)
            ax.text(0.99, 0.98, f"capacity clipped (peak {cap_top:,.0f} req/s)",
                    transform=ax.transAxes, ha="right", va="top", fontsize=8.5, color=C_CAPACITY,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5})
        else:
            ax.set_ylim(bottom=0)
        _setup_x(ax, tx)
        _legend_right(ax)
        return _png(fig)


def plot_cost(ts: pd.DataFrame, tx: TimeAxis) -> bytes:
    """(b) Cumulative cost, IaaS and FaaS stacked."""
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _time_fig(3.2)
        t_end = (ts["elapsed_s"].to_numpy() + ts["interval_s"].to_numpy()) / tx.divisor
        x = np.concatenate([[tx.lo], t_end])
        iaas = np.concatenate([[0.0], np.cumsum(ts["iaas_usd"].to_numpy(float))])
        faas = np.concatenate([[0.0], np.cumsum(ts["faas_usd"].to_numpy(float))])
        ax.stackplot(x, iaas, faas, colors=[C_IAAS, C_FAAS], alpha=0.8, lw=0,
                     labels=[f"IaaS  ${iaas[-1]:,.2f}", f"FaaS  ${faas[-1]:,.2f}"])
        ax.plot(x, iaas + faas, color="#222222", lw=0.9, label=f"total ${iaas[-1] + faas[-1]:,.2f}")
        ax.set_ylabel("cumulative cost (USD)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("${x:,.2f}"))
        _setup_x(ax, tx)
        _legend_right(ax)
        return _png(fig)


def plot_latency_time(ts: pd.DataFrame, tx: TimeAxis, slo_ms: float) -> bytes:
    """(c1) Per-interval p50/p99 with the SLO line."""
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _time_fig(3.2)
        x = _x(ts, tx)
        p50 = ts["p50_ms"].to_numpy(float)
        p99 = ts["p99_ms"].to_numpy(float)
        p99_label = "p99 (max in bin)" if "offered_rps_max" in ts.columns else "p99"
        ax.plot(x, p99, color="#d6336c", lw=1.0, label=p99_label)
        ax.plot(x, p50, color="#1c7ed6", lw=1.0, label="p50")
        ax.axhline(slo_ms, color=C_SLO, ls="--", lw=1.2, label=f"SLO {slo_ms:g} ms")
        finite = np.concatenate([p50[np.isfinite(p50)], p99[np.isfinite(p99)], [slo_ms]])
        finite = finite[finite > 0]
        if finite.size and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
        else:
            ax.set_ylim(bottom=0)
        miss = ~np.isfinite(p99)
        if miss.all():
            ax.text(0.5, 0.5, "no per-interval latency recorded", transform=ax.transAxes,
                    ha="center", va="center", color="#666666")
        ax.set_ylabel("latency (ms)")
        _setup_x(ax, tx)
        _legend_right(ax)
        return _png(fig)


def _compact(n: float) -> str:
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def plot_latency_cdf(hist: pd.DataFrame, slo_ms: float, target: float | None) -> bytes:
    """(c2) Latency CDF per path from the histogram, log x."""
    with matplotlib.rc_context(_RC):
        height = 3.6
        fig = Figure(figsize=(FIG_WIDTH_IN, height))
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=LEFT, right=RIGHT, bottom=0.55 / height, top=1 - 0.15 / height)
        lo = hist["lo_ms"].to_numpy(float)
        hi = hist["hi_ms"].to_numpy(float)
        paths = ["instance", "function_warm", "function_cold"]
        total = np.zeros(len(hist))
        series = []
        for p in paths:
            c = hist[p].to_numpy(float)
            total = total + c
            if c.sum() > 0:
                series.append((p.replace("_", " "), c, PATH_COLORS[p], 1.3))
        if total.sum() > 0 and len(series) > 1:
            series.insert(0, ("all requests", total, "#222222", 2.0))
        # x positions: the upper edge of each bin (first point at the first lower edge).
        x_edges = np.concatenate([[lo[0]], hi]) if len(lo) else np.array([])
        ok = np.isfinite(x_edges) & (x_edges > 0)
        for name, counts, color, lw in series:
            cdf = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
            ax.plot(x_edges[ok], cdf[ok], color=color, lw=lw,
                    label=f"{name} (n={_compact(counts.sum())})")
        ax.axvline(slo_ms, color=C_SLO, ls="--", lw=1.2, label=f"SLO {slo_ms:g} ms")
        if target is not None and np.isfinite(target):
            ax.axhline(target, color="#868e96", ls=":", lw=1.0,
                       label=f"attainment target {target:.4g}")
        if not series:
            ax.text(0.5, 0.5, "latency histogram is empty", transform=ax.transAxes,
                    ha="center", va="center", color="#666666")
        if ok.any():
            # Zoom on the populated bins (all series share one x-range).
            nz = np.flatnonzero(total > 0)
            if nz.size:
                x_lo = lo[nz[0]] if lo[nz[0]] > 0 else x_edges[ok][0]
                x_hi = hi[nz[-1]] if np.isfinite(hi[nz[-1]]) else x_edges[ok][-1]
                x_lo, x_hi = min(x_lo, slo_ms), max(x_hi, slo_ms)
                ax.set_xlim(x_lo / 1.5, x_hi * 1.5)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of requests ≤ latency")
        _legend_right(ax)
        return _png(fig)


def plot_fleet(ts: pd.DataFrame, tx: TimeAxis, kinds: list[tuple[str, str, str]]) -> bytes:
    """(d) Fleet composition stacked by (type, market); pending/draining in a lower panel.

    ``kinds`` is a list of (column, instance_type, market).
    """
    with matplotlib.rc_context(_RC):
        fig, (ax, ax2) = _time_fig(4.6, nrows=2, height_ratios=[3, 1.15])
        x = _x(ts, tx)
        types = sorted({k[1] for k in kinds})
        cmap = matplotlib.colormaps["tab10"]
        type_color = {t: cmap(i % 10) for i, t in enumerate(types)}
        kinds = [k for k in kinds if ts[k[0]].to_numpy(float).any()]  # used in this run
        if kinds:
            ys = [ts[c].to_numpy(float) for c, _, _ in kinds]
            labels = [f"{t} {m}" for _, t, m in kinds]
            polys = ax.stackplot(x, *ys, labels=labels, lw=0,
                                 colors=[type_color[t] for _, t, _ in kinds])
            for poly, (_, _, market) in zip(polys, kinds):
                if market != "on-demand":
                    poly.set_alpha(0.5)
                    poly.set_hatch("///")
                    poly.set_edgecolor("white")
                else:
                    poly.set_alpha(0.85)
        else:
            ax.text(0.5, 0.5, "no instances in this run", transform=ax.transAxes,
                    ha="center", va="center", color="#666666")
        ax.plot(x, ts["instances_ready"].to_numpy(float), color="#222222", lw=1.0,
                label="ready (serving)")
        ax.set_ylabel("live instances")
        top = max(float(np.nanmax(sum(ts[c].to_numpy(float) for c, _, _ in kinds)))
                  if kinds else 0.0, float(np.nanmax(ts["instances_ready"].to_numpy(float))))
        ax.set_ylim(0, max(1.0, top * 1.05))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6, integer=True))
        _setup_x(ax, tx, label=False)
        _legend_right(ax)

        ax2.plot(x, ts["instances_pending"].to_numpy(float), color="#7048e8", lw=1.1,
                 label="pending (booting)")
        ax2.plot(x, ts["instances_draining"].to_numpy(float), color="#e8590c", lw=1.1,
                 label="draining")
        ax2.set_ylabel("instances")
        pd_top = max(float(np.nanmax(ts["instances_pending"].to_numpy(float))),
                     float(np.nanmax(ts["instances_draining"].to_numpy(float))))
        ax2.set_ylim(0, max(1.0, pd_top * 1.1))
        ax2.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3, integer=True))
        _setup_x(ax2, tx)
        _legend_right(ax2)
        return _png(fig)
