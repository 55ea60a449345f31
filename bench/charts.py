"""SVG charts of the benchmark results, drawn with matplotlib: see bench/README.md.

Used by bench/run after a run (from the runs it just measured) and by
`bench/run --charts-from FILE` (from a saved bench/results/latest.json, or from a results table
in markdown such as bench/RESULTS.md, without running anything).

Charts:
  throughput-vs-direct.svg  each scenario's rate as a share of direct (higher is better)
  latency-vs-direct.svg     each scenario's latency as a multiple of direct (lower is better)
  sse-latency.svg           SSE event delay percentiles per target
  websocket-latency.svg     WebSocket echo round-trip percentiles per target

Every bar and dot is the median of the runs; whiskers span the runs' min to max.
"""

import json
import os
import re
import statistics
import textwrap

# One colour per proxy, the same in every chart; sluice's forward listener is sluice.
COLOURS = {"direct": "#8c959f", "sluice": "#0b63ce", "sluice-fwd": "#0b63ce",
           "sluice-socks": "#0b63ce", "nginx": "#1a7f37", "haproxy": "#e36209",
           "squid": "#8250df", "varnish": "#bf3989", "microsocks": "#9a6700"}
LABELS = {"direct": "direct", "sluice": "sluice", "sluice-fwd": "sluice (forward listener)",
          "sluice-socks": "sluice (SOCKS5)", "nginx": "nginx", "haproxy": "HAProxy",
          "squid": "Squid", "varnish": "Varnish", "microsocks": "microsocks"}
# sluice's other listeners are told apart by a pattern.
HATCHES = {"sluice-fwd": "////", "sluice-socks": "...."}
RATES = ("req/s", "MB/s", "msg/s")
LATENCIES = ("p99 ms", "p50 µs", "p99 µs")
PERCENTILES = [("p50 µs", "p50", "o"), ("p90 µs", "p90", "D"), ("p99 µs", "p99", "^"),
               ("p99.9 µs", "p99.9", "s")]


# ------------------------------------------------------------------ the data

def summarise(runs_by_scenario):
    """[(scenario, targets, {target: [run dict]})] -> summary: a list of
    {"scenario", "targets", "metrics": {metric: {target: (median, min, max)}}}."""
    out = []
    for scenario, targets, data in runs_by_scenario:
        metrics = {}
        for target in targets:
            for run in data.get(target, []):
                for key, value in run.items():
                    if key.startswith("_") or not isinstance(value, (int, float)):
                        continue
                    metrics.setdefault(key, {}).setdefault(target, []).append(float(value))
        out.append({"scenario": scenario, "targets": list(targets),
                    "metrics": {m: {t: (statistics.median(v), min(v), max(v))
                                    for t, v in per.items()} for m, per in metrics.items()}})
    return out


def load_json(path):
    """A results file written by bench/run: its summary and its description."""
    with open(path) as f:
        saved = json.load(f)
    runs = [(s["scenario"], s["targets"], s["runs"]) for s in saved["scenarios"]]
    return summarise(runs), saved.get("meta", {})


def number(text):
    return float(text.replace(",", ""))


def load_markdown(path, section=None):
    """The first bench/run results table in a markdown file (or in the first section whose
    heading contains `section`): its summary and what the lines above it say."""
    with open(path) as f:
        lines = f.read().splitlines()
    start = 0
    if section:
        start = next((i for i, line in enumerate(lines)
                      if line.startswith("#") and section in line), None)
        if start is None:
            raise ValueError(f"no heading containing {section!r} in {path}")
    header = next((i for i in range(start, len(lines))
                   if lines[i].startswith("| scenario | target | metric | median | min | max |")),
                  None)
    if header is None:
        raise ValueError(f"no bench/run results table in {path}")
    meta = {}
    for line in lines[start:header]:
        m = re.match(r"- (date|command|machine|pinning|peers): (.*)", line)
        if m:
            meta[m.group(1)] = m.group(2).replace("`", "")
        m = re.match(r"#+ (.*)", line)
        if m:
            meta["title"] = m.group(1)
    scenarios = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        scenario, target, metric, median, low, high = cells[:6]
        if median == "-":
            continue
        if not scenarios or scenarios[-1]["scenario"] != scenario:
            scenarios.append({"scenario": scenario, "targets": [], "metrics": {}})
        entry = scenarios[-1]
        if target not in entry["targets"]:
            entry["targets"].append(target)
        entry["metrics"].setdefault(metric, {})[target] = (number(median), number(low),
                                                          number(high))
    return scenarios, meta


# ------------------------------------------------------------------ drawing

def _pyplot():
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "svg.fonttype": "none",          # text stays text: small files, the viewer's fonts
        "svg.hashsalt": "sluice-bench",  # the same input gives the same file
        "font.family": "sans-serif",
        "font.sans-serif": ["Helvetica", "Arial", "DejaVu Sans", "Liberation Sans"],
        "font.size": 9,
        "axes.edgecolor": "#d0d7de",
        "axes.labelcolor": "#444c56",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "xtick.color": "#57606a",
        "ytick.color": "#24292f",
        "legend.frameon": False,
    })
    return plt


def _subtitle(meta, what):
    """Where the numbers come from, then how to read the chart, in lines that fit."""
    source = " · ".join(p for p in (meta.get("date"), meta.get("command")) if p)
    lines = textwrap.wrap(source, 120) if source else []
    return "\n".join(lines + [what])


def _finish(fig, ax, title, subtitle, handles, path):
    """Title and subtitle above the chart, the legend below it, then the file."""
    del ax  # laid out by tight_layout inside the space left for the header and legend
    width, height = fig.get_size_inches()
    header = 0.32 + 0.15 * (subtitle.count("\n") + 1)
    fig.text(0.012, 1 - 0.12 / height, title, fontsize=11, fontweight="bold", va="top")
    fig.text(0.012, 1 - 0.36 / height, subtitle, fontsize=7.5, color="#57606a", va="top",
             linespacing=1.4)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.02),
               ncol=len(handles), fontsize=8, handlelength=1.6, columnspacing=1.4)
    fig.tight_layout(rect=(0, 0.32 / height, 1, 1 - header / height))
    fig.savefig(path, format="svg", metadata={"Date": None})
    print(f"wrote {path}")


def ratio_chart(plt, summary, meta, path, metrics, title, better):
    """Horizontal bars: each target's median as a multiple of direct's, per scenario."""
    rows = []  # (label, [(target, ratio, low, high)])
    for entry in summary:
        for metric in [m for m in entry["metrics"] if m in metrics]:
            per = entry["metrics"][metric]
            direct = per.get("direct")
            if not direct or not direct[0]:
                continue
            bars = [(t, per[t][0] / direct[0], per[t][1] / direct[0], per[t][2] / direct[0])
                    for t in entry["targets"] if t != "direct" and t in per]
            if bars:
                rows.append((f"{entry['scenario']}\n({metric})", bars))
            if metrics is RATES:
                break  # one rate per scenario: the first one measured
    if not rows:
        return False
    height = 1.9 + sum(0.2 * len(bars) + 0.3 for _, bars in rows)
    fig, ax = plt.subplots(figsize=(8.6, height))
    y, ticks, seen = 0.0, [], {}
    for label, bars in rows:
        top = y
        for target, ratio, low, high in bars:
            colour = COLOURS.get(target, "#57606a")
            hatch = HATCHES.get(target)
            seen.setdefault(target, plt.Rectangle((0, 0), 1, 1, facecolor=colour, hatch=hatch,
                                                  edgecolor="white", linewidth=0,
                                                  label=LABELS.get(target, target)))
            ax.barh(y, ratio, height=0.18, color=colour, hatch=hatch, edgecolor="white",
                    linewidth=0)
            ax.plot([low, high], [y, y], color="#24292f", linewidth=0.8, alpha=0.55)
            ax.text(max(ratio, high) + 0.015 * ax_max(rows), y, f"{ratio:.2f}×", va="center",
                    fontsize=7.5, color="#24292f")
            y += 0.2
        ticks.append(((top + y - 0.2) / 2, label))
        y += 0.3
    ax.axvline(1.0, color="#57606a", linewidth=1, linestyle="--")
    ax.set_yticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
    ax.set_ylim(y - 0.3 + 0.05, -0.25)
    ax.set_xlim(0, ax_max(rows) * 1.12)
    ax.set_xlabel(f"× direct ({better} is better)")
    ax.grid(axis="x", color="#eaeef2", linewidth=0.8)
    ax.set_axisbelow(True)
    direct = plt.Line2D([], [], color="#57606a", linestyle="--", linewidth=1, label="direct = 1")
    subtitle = _subtitle(meta, "bars: median of the runs ÷ direct's median; whiskers: the "
                               "runs' min to max")
    legend = [seen[t] for t in COLOURS if t in seen] + [direct]
    _finish(fig, ax, title, subtitle, legend, path)
    plt.close(fig)
    return True


def ax_max(rows):
    """The largest value a ratio chart has to show, 1 (direct) at least."""
    return max(1.0, max(max(b[1], b[3]) for _, bars in rows for b in bars))


def latency_chart(plt, summary, meta, path, scenario_prefix, what):
    """Dots per target at each percentile measured (log scale), whiskers across runs."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    entry = next((e for e in summary if e["scenario"].startswith(scenario_prefix)), None)
    if entry is None:
        return False
    present = [(metric, name, marker) for metric, name, marker in PERCENTILES
               if metric in entry["metrics"]]
    if not present:
        return False
    targets = [t for t in entry["targets"]
               if any(t in entry["metrics"][m] for m, _, _ in present)]
    fig, ax = plt.subplots(figsize=(8.6, 1.9 + 0.5 * len(targets)))
    # Each percentile on its own line within the target's row, so the runs' ranges of p50
    # and p99 stay apart where they overlap; the upper half labelled above, the lower below.
    step = 0.32 / max(len(present), 2)
    for row, target in enumerate(targets):
        colour = COLOURS.get(target, "#57606a")
        for i, (metric, name, marker) in enumerate(present):
            value = entry["metrics"][metric].get(target)
            if not value:
                continue
            median, low, high = value
            y = row + (i - (len(present) - 1) / 2) * step
            ax.plot([low, high], [y, y], color=colour, linewidth=2.5, alpha=0.25,
                    solid_capstyle="round")
            ax.plot(median, y, marker=marker, color=colour, markersize=5.5, linestyle="none")
            above = i < len(present) / 2
            ax.annotate(f"{median:,.0f}", (median, y), xytext=(0, 5 if above else -5),
                        textcoords="offset points", ha="center",
                        va="bottom" if above else "top", fontsize=7, color="#444c56")
    ax.set_yticks(range(len(targets)), [LABELS.get(t, t) for t in targets])
    ax.set_ylim(len(targets) - 0.5, -0.7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{what}, µs (log scale; lower is better)")
    ax.grid(axis="x", which="major", color="#eaeef2", linewidth=0.8)
    ax.set_axisbelow(True)
    handles = [plt.Line2D([], [], marker=marker, color="#57606a", linestyle="none", label=name)
               for _, name, marker in present]
    subtitle = _subtitle(meta, "markers: median of the runs, labelled in µs; shaded: the runs' "
                               "min to max")
    title = entry["scenario"] if what.split()[-1] in entry["scenario"] else \
        f"{entry['scenario']}: {what}"
    _finish(fig, ax, title, subtitle, handles, path)
    plt.close(fig)
    return True


def render(summary, meta, outdir):
    """Writes every chart the summary has data for into `outdir`; returns the files written."""
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    charts = [
        ("throughput-vs-direct.svg", lambda p: ratio_chart(
            plt, summary, meta, p, RATES, "Throughput relative to direct", "higher")),
        ("latency-vs-direct.svg", lambda p: ratio_chart(
            plt, summary, meta, p, LATENCIES, "Latency relative to direct", "lower")),
        ("sse-latency.svg", lambda p: latency_chart(
            plt, summary, meta, p, "SSE", "event delay")),
        ("websocket-latency.svg", lambda p: latency_chart(
            plt, summary, meta, p, "WebSocket", "round-trip time")),
    ]
    written = []
    for name, draw in charts:
        path = os.path.join(outdir, name)
        if draw(path):
            written.append(path)
    return written
