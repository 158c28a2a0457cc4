"""Render a `spillway compare` output directory into one self-contained ``report.html``.

Public API::

    render_comparison(out_dir) -> Path    # reads out_dir/comparison.json and each run's
                                          # timeseries.csv, writes out_dir/report.html

The page holds an overall table (policy x trace, cost relative to the oracle lower bound), then
per trace: a table of every policy's figures, a bar chart of cost per policy with the bound as
a line, and the offered load against each policy's instance capacity over time. Styles,
formatting and plot conventions are the run report's (``controller.report``,
``controller.report_plots``); plots are PNGs embedded as ``data:`` URIs.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from controller import report_plots as rp
from controller.report import (TEMPLATE_PATH, ReportError, _duration, _e, _err, _img, _int,
                               _load_timeseries, _ms, _pct, _usd, downsample)

__all__ = ["render_comparison"]

MAX_LOAD_POINTS = 700          # per policy panel
C_BOUND = "#c92a2a"

_EXTRA_CSS = """
  .intro { max-width: 900px; }
  .warnbox { background: #fff9db; border: 1px solid #f0c36d; border-left: 4px solid #e67700;
             border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
  td.ratio { font-weight: 700; font-size: 1.05em; }
  tr.best td { background: var(--good-bg) !important; }
  tr.best td.ratio, tr.best td.cost, td.best { color: var(--good); font-weight: 700; }
  td.best { background: var(--good-bg) !important; }
  tr.missed td.slo, td.missed { color: var(--bad); font-weight: 600; }
  tr.failed td { color: var(--bad); }
  .tag { display: inline-block; font-size: 0.75em; padding: 0 6px; border-radius: 8px;
         margin-left: 6px; font-weight: 600; vertical-align: 1px; }
  .tag.good { background: var(--good); color: #fff; }
  .tag.bad { background: var(--bad); color: #fff; }
  .section-meta { color: var(--muted); font-size: 0.92em; margin-bottom: 10px; }
  nav.toc { margin: 10px 0 4px; font-size: 0.92em; }
  nav.toc a { margin-right: 12px; }
  a { color: #1c5fb8; }
  .bad { color: var(--bad); }
"""


def _style() -> str:
    """The run report's stylesheet (from its template), plus this page's few additions."""
    m = re.search(r"<style>(.*?)</style>", TEMPLATE_PATH.read_text(encoding="utf-8"), re.S)
    return (m.group(1) if m else "") + _EXTRA_CSS


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _ratio(x) -> str:
    x = _num(x)
    return "—" if not math.isfinite(x) else f"{x:.2f}×"


def _ok(r: dict) -> bool:
    return r["status"] == "ok"


def _best(rows: list[dict]) -> dict | None:
    """The cheapest policy that met the SLO."""
    met = [r for r in rows if _ok(r) and r["slo_met"]]
    return min(met, key=lambda r: r["cost_usd"]) if met else None


# ------------------------------------------------------------------------------------ plots


def plot_costs(rows: list[dict], bound_usd: float | None) -> bytes:
    """Cost per policy (IaaS + FaaS stacked), the oracle bound as a line; SLO misses hatched."""
    with matplotlib.rc_context(rp._RC):
        height = 3.4
        fig = Figure(figsize=(rp.FIG_WIDTH_IN, height))
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=rp.LEFT, right=rp.RIGHT, bottom=0.45 / height, top=1 - 0.2 / height)
        x = np.arange(len(rows))
        iaas = np.array([_num(r["iaas_usd"]) if _ok(r) else 0.0 for r in rows])
        faas = np.array([_num(r["faas_usd"]) if _ok(r) else 0.0 for r in rows])
        total = iaas + faas
        missed = [_ok(r) and not r["slo_met"] for r in rows]
        hatch = ["///" if m else None for m in missed]
        bars_i = ax.bar(x, iaas, 0.6, color=rp.C_IAAS, alpha=0.85, label="IaaS (instances)")
        bars_f = ax.bar(x, faas, 0.6, bottom=iaas, color=rp.C_FAAS, alpha=0.85, label="FaaS (functions)")
        for bars in (bars_i, bars_f):
            for b, h in zip(bars, hatch):
                if h:
                    b.set_hatch(h)
                    b.set_edgecolor("white")
        has_bound = bound_usd is not None and math.isfinite(bound_usd)
        # Clip the y-axis when one policy costs many times the others (faas-only often costs
        # 50-100x a fleet): the cheap bars and the bound stay readable, the clipped bar says so.
        ref = float(np.median(total[[_ok(r) for r in rows]])) if any(_ok(r) for r in rows) else 0.0
        ref = max(ref, bound_usd if has_bound else 0.0)
        top = float(np.nanmax(total)) if len(total) else 0.0
        if has_bound:
            ax.axhline(bound_usd, color=C_BOUND, ls="--", lw=1.4, label=f"oracle bound {_usd(bound_usd)}")
            top = max(top, bound_usd)
        clip = 3.0 * ref if top > 4.0 * ref > 0 else None
        y_max = (clip if clip else max(top, 1e-9)) * 1.25
        ax.set_ylim(0, y_max)
        for i, r in enumerate(rows):
            if not _ok(r):
                ax.text(i, y_max * 0.03, "failed", ha="center", va="bottom", color=C_BOUND, fontsize=9)
                continue
            label = _usd(total[i])
            if r.get("cost_vs_bound") is not None:
                label += f"\n{r['cost_vs_bound']:.2f}× bound"
            color = C_BOUND if missed[i] else "#222222"
            if clip and total[i] > clip:
                ax.text(i, clip * 0.97, label + "\n(bar clipped)", ha="center", va="top", fontsize=8.5,
                        color=color, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85,
                                           "pad": 1.5})
            else:
                ax.text(i, total[i] + y_max * 0.015, label, ha="center", va="bottom", fontsize=8.5,
                        color=color)
        if any(missed):
            ax.bar([0], [0], color="#bbbbbb", hatch="///", edgecolor="white", label="missed the SLO")
        ax.set_xticks(x, [r["policy"] for r in rows])
        for tick, m in zip(ax.get_xticklabels(), missed):
            if m:
                tick.set_color(C_BOUND)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylabel("cost over the window (USD)")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _usd(v)))
        ax.grid(axis="x", visible=False)
        rp._legend_right(ax)
        return rp._png(fig)


def plot_load_by_policy(panels: list[tuple[str, object]], span_s: float) -> bytes:
    """Offered load vs each policy's ready instance capacity, one panel per policy, shared axes.

    ``panels``: (policy, downsampled timeseries) pairs. Function-served traffic is shaded.
    """
    tx = rp.time_axis(span_s)
    with matplotlib.rc_context(rp._RC):
        n = len(panels)
        fig, axes = rp._time_fig(0.75 + 1.6 * n, nrows=n, hspace=0.32)
        peak = max(float(np.nanmax(ts["offered_rps"].to_numpy(float))) for _, ts in panels)
        cap_top = max(float(np.nanmax(ts["capacity_rps"].to_numpy(float))) for _, ts in panels)
        y_top = max(peak, 1e-9) * 1.3
        clipped = cap_top > y_top * 3      # e.g. a large fleet held through a quiet window
        y_top = y_top if clipped else max(y_top, cap_top * 1.08)
        for k, (ax, (policy, ts)) in enumerate(zip(axes, panels)):
            x = rp._x(ts, tx)
            inst = rp._rate(ts, "served_instance")
            fn = rp._rate(ts, ["served_function_warm", "served_function_cold"])
            lost = rp._rate(ts, "dropped")
            if inst.any():
                ax.fill_between(x, 0, inst, color=rp.C_INSTANCE, alpha=0.35, lw=0,
                                label="served by instances")
            if fn.any():
                ax.fill_between(x, inst, inst + fn, color=rp.C_FUNCTION, alpha=0.6, lw=0,
                                label="served by functions")
            if lost.any():
                ax.fill_between(x, inst + fn, inst + fn + lost, color=rp.C_LOST, alpha=0.75, lw=0,
                                label="dropped")
            ax.plot(x, ts["offered_rps"].to_numpy(float), color=rp.C_OFFERED, lw=0.9,
                    label="offered load")
            ax.plot(x, ts["capacity_rps"].to_numpy(float), color=rp.C_CAPACITY, lw=1.3, ls="--",
                    label="instance capacity (ready)")
            ax.set_ylim(0, y_top)
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_compact_rate))
            ax.set_title(policy, loc="left", fontsize=9.5, fontweight="bold", pad=3)
            rp._setup_x(ax, tx, label=k == n - 1)
        handles = {}
        for ax in axes:   # one legend for all panels, in the top panel's margin
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        order = sorted(handles, key=["offered load", "instance capacity (ready)", "served by instances",
                                     "served by functions", "dropped"].index)
        axes[0].legend([handles[k] for k in order], order, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
        axes[n // 2].set_ylabel("requests / s")
        if clipped:
            axes[0].text(0.995, 1.02, f"capacity clipped (peak {cap_top:,.0f} req/s)",
                         transform=axes[0].transAxes, ha="right", va="bottom", fontsize=8.5,
                         color=rp.C_CAPACITY,
                         bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5})
        return rp._png(fig)


def _compact_rate(v, _pos=None) -> str:
    return f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"


# ------------------------------------------------------------------------------------ tables


def _run_dir(out: Path, slug: str, policy: str) -> Path:
    """A run's directory, found relative to the output directory (which may have moved)."""
    return out / slug / policy


def _link(out: Path, slug: str, policy: str) -> str:
    if not (_run_dir(out, slug, policy) / "report.html").is_file():
        return '<span class="muted">—</span>'
    return f'<a href="{_e(slug)}/{_e(policy)}/report.html">report</a>'


def _trace_table(rows: list[dict], out: Path, slug: str, has_bound: bool) -> str:
    best = _best(rows)
    head = ("<tr><th>policy</th><th class=num>cost</th><th class=num>cost / bound</th>"
            "<th class=num>IaaS</th><th class=num>FaaS</th><th class=num>SLO attainment</th>"
            "<th class=num>p99</th><th class=num>function share</th><th class=num>launches</th>"
            "<th class=num>instance-hours</th><th class=num>dropped</th><th>run</th></tr>")
    body = []
    for r in rows:
        if not _ok(r):
            body.append(f"<tr class=failed><td>{_e(r['policy'])}<span class='tag bad'>failed</span></td>"
                        f"<td colspan=10>{_e(r.get('error') or 'failed')}</td>"
                        f"<td>{_link(out, slug, r['policy'])}</td></tr>")
            continue
        cls, tag = "", ""
        if r is best:
            cls, tag = "best", "<span class='tag good'>cheapest meeting the SLO</span>"
        elif not r["slo_met"]:
            cls, tag = "missed", "<span class='tag bad'>missed the SLO</span>"
        ratio = _ratio(r["cost_vs_bound"]) if has_bound else "—"
        body.append(
            f"<tr class='{cls}'><td>{_e(r['policy'])}{tag}</td>"
            f"<td class='num cost'>{_e(_usd(r['cost_usd']))}</td>"
            f"<td class='num ratio'>{_e(ratio)}</td>"
            f"<td class=num>{_e(_usd(r['iaas_usd']))}</td>"
            f"<td class=num>{_e(_usd(r['faas_usd']))}</td>"
            f"<td class='num slo'>{_e(_pct(_num(r['slo_attainment']), 3))}</td>"
            f"<td class=num>{_e(_ms(_num(r['p99_ms'])))}</td>"
            f"<td class=num>{_e(_pct(_num(r['faas_fraction']), 1))}</td>"
            f"<td class=num>{_e(_int(r['launches']))}</td>"
            f"<td class=num>{r['instance_hours']:,.1f}</td>"
            f"<td class=num>{_e(_int(r['dropped']))}</td>"
            f"<td>{_link(out, slug, r['policy'])}</td></tr>")
    return (f"<div class=table-wrap><table><thead>{head}</thead><tbody>{''.join(body)}"
            "</tbody></table></div>")


def _overview(doc: dict, by_trace: dict[str, list[dict]], has_bound: bool) -> str:
    windows = doc["windows"]
    heads = "".join(f"<th class=num><a href='#{_e(w['slug'])}'>{_e(w['slug'])}</a></th>" for w in windows)
    extra = "<th class=num>geo-mean cost / bound</th>" if has_bound else ""
    what = "cost / oracle bound" if has_bound else "cost"
    best = {w["slug"]: _best(by_trace[w["slug"]]) for w in windows}
    body = []
    for policy in doc["policies"]:
        cells, ratios, met, n_ok = [], [], 0, 0
        for w in windows:
            r = next((x for x in by_trace[w["slug"]] if x["policy"] == policy), None)
            if r is None or not _ok(r):
                cells.append("<td class='num missed'>failed</td>")
                continue
            n_ok += 1
            met += bool(r["slo_met"])
            v = _ratio(r["cost_vs_bound"]) if has_bound else _usd(r["cost_usd"])
            if has_bound and r["cost_vs_bound"] is not None:
                ratios.append(r["cost_vs_bound"])
            if r is best[w["slug"]]:
                cells.append(f"<td class='num best'>{_e(v)}</td>")
            elif not r["slo_met"]:
                cells.append(f"<td class='num missed' title='missed the SLO'>{_e(v)} ✗</td>")
            else:
                cells.append(f"<td class=num>{_e(v)}</td>")
        geo = ""
        if has_bound:
            ok = len(ratios) == len(windows) and all(x > 0 for x in ratios)
            geo = f"<td class='num ratio'>{_e(_ratio(math.exp(np.mean(np.log(ratios)))) if ok else '—')}</td>"
        body.append(f"<tr><td>{_e(policy)}</td>{''.join(cells)}{geo}"
                    f"<td class=num>{met} / {len(windows)}</td></tr>")
    return (f"<p class=muted>Each cell: {what} on that trace. Green: the cheapest policy that met the "
            "SLO there; ✗ and red: missed the SLO attainment target.</p>"
            f"<div class=table-wrap><table><thead><tr><th>policy</th>{heads}{extra}"
            f"<th class=num>SLO met</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _window_text(w: dict) -> str:
    where = f"from {_duration(w['start_s'])}" if w["start_s"] > 0 else "from the start"
    return (f"{_duration(w['duration_s'])} {where} of its {_duration(w['trace_duration_s'])} "
            f"({w['how']})")


# ------------------------------------------------------------------------------------ render


def _load_doc(out: Path) -> dict:
    path = out / "comparison.json"
    if not path.is_file():
        raise _err(path, "not found (is this a `spillway compare` output directory?)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _err(path, f"not valid JSON: {e}") from None
    for key in ("rows", "windows", "policies", "bounds", "mean_rps"):
        if key not in doc:
            raise _err(path, f"missing key {key!r}")
    return doc


def render_comparison(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    doc = _load_doc(out)
    has_bound = any(b.get("usd") is not None for b in doc["bounds"].values())
    slug_of = {w["trace"]: w["slug"] for w in doc["windows"]}
    by_trace: dict[str, list[dict]] = {w["slug"]: [] for w in doc["windows"]}
    for r in doc["rows"]:
        by_trace[slug_of[r["trace"]]].append(r)

    sections = []
    for w in doc["windows"]:
        rows = by_trace[w["slug"]]
        bound = doc["bounds"].get(w["slug"], {})
        ok_rows = [r for r in rows if _ok(r)]
        requests = f"{_int(ok_rows[0]['requests'])} requests" if ok_rows else "no successful run"
        if bound.get("usd") is not None:
            btxt = f"oracle bound <b>{_e(_usd(bound['usd']))}</b>"
        elif bound.get("status") == "failed":
            btxt = f"<span class=bad>oracle bound failed: {_e(bound.get('error'))}</span>"
        else:
            btxt = "no oracle bound"
        parts = [f"<h2 id='{_e(w['slug'])}'>{_e(w['slug'])}</h2>",
                 f"<div class=section-meta>{_e(_window_text(w))} · mean {doc['mean_rps']:,.0f} req/s · "
                 f"{_e(requests)} · {btxt}</div>"]
        if bound.get("feasible") is False:
            parts.append("<div class=warnbox><b>No policy can meet the SLO on this trace</b> within the "
                         "fleet caps and budget (see the bound's notes).</div>")
        parts.append(_trace_table(rows, out, w["slug"], has_bound))
        if bound.get("notes"):
            parts.append(f"<details><summary>How the oracle bound was computed</summary>"
                         f"<p class=muted style='padding: 0 14px'>{_e(bound['notes'])}</p></details>")
        if ok_rows:
            parts.append(f"<figure>{_img(plot_costs(rows, bound.get('usd')), 'cost per policy')}"
                         "<figcaption>Cost of each policy over the window, instances (IaaS) under "
                         "functions (FaaS); the dashed red line is the oracle's lower bound on the cost "
                         "of serving this load within the SLO. Hatched bars missed the SLO.</figcaption>"
                         "</figure>")
        panels, problems = [], []
        for r in ok_rows:
            try:
                ts, kinds = _load_timeseries(_run_dir(out, w["slug"], r["policy"]) / "timeseries.csv")
            except ReportError as e:
                problems.append(str(e))
                continue
            panels.append((r["policy"], downsample(ts, kinds, MAX_LOAD_POINTS)))
        if panels:
            parts.append(f"<figure>{_img(plot_load_by_policy(panels, w['duration_s']), 'load vs capacity')}"
                         "<figcaption>Offered load (black) against the rate each policy's ready instances "
                         "can serve within the SLO (dashed green). Filled underneath: traffic served by "
                         "instances (blue) and by functions (orange), and requests dropped "
                         "(red).</figcaption></figure>")
        for p in problems:
            parts.append(f"<p class=muted>Not plotted: {_e(p)}</p>")
        sections.append("\n".join(parts))

    failed = [r for r in doc["rows"] if not _ok(r)]
    warn = []
    for slug, b in doc["bounds"].items():
        if b.get("status") == "failed":
            warn.append(f"<div class=warnbox><b>The oracle bound failed on {_e(slug)}:</b> "
                        f"{_e(b.get('error'))}. Its cost / bound column is empty.</div>")
    if failed:
        warn.append(f"<div class=warnbox><b>{len(failed)} run(s) failed</b>; their rows say why.</div>")
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in doc.get("notes", []))
    n_traces, n_pol = len(doc["windows"]), len(doc["policies"])
    meta = " · ".join([
        f"{n_pol} policies × {n_traces} traces",
        f"every trace rescaled to a mean of <b>{doc['mean_rps']:,.0f} req/s</b>",
        f"config {_e(doc.get('config_file', '(defaults)'))}",
        f"seed {_e(doc['seed'] if doc.get('seed') is not None else 'from config')}",
        f"{_e(_duration(doc.get('wall_s') or 0))} wall time",
        f"spillway {_e(doc.get('spillway_version', '?'))}",
    ])
    windows = "".join(f"<li><b>{_e(w['slug'])}</b>: {_e(_window_text(w))}</li>" for w in doc["windows"])
    toc = "".join(f"<a href='#{_e(w['slug'])}'>{_e(w['slug'])}</a>" for w in doc["windows"])
    bound_sentence = ("<b>cost / bound</b> divides a policy's cost by the oracle's lower bound (perfect "
                      "knowledge of the load; 1.00× is the least any policy could pay), "
                      if has_bound else "")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spillway: policy comparison</title>
<style>{_style()}</style>
</head>
<body>
<main>
<h1>Policy comparison</h1>
<div class="meta">{meta}</div>
<p class=intro>What each scaling policy costs on each trace and how close it comes to the best
possible: {bound_sentence}SLO attainment is the share of requests answered within the latency SLO
(dropped requests count as misses). Every policy on a trace replays the same arrivals.</p>
{''.join(warn)}
<h3>Windows simulated</h3>
<ul class=notes>{windows}{notes_html}</ul>
<h2>Overview</h2>
{_overview(doc, by_trace, has_bound)}
<nav class=toc>Traces: {toc}</nav>
{''.join(sections)}
<footer>Generated by spillway compare in {_e(str(out))}: comparison.csv and comparison.json hold these
rows; each run's directory holds its summary.json, timeseries.csv and report.html.</footer>
</main>
</body>
</html>
"""
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
