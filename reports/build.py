"""Build report.html (and results.csv) from run directories.

load (tidy table) -> tables and plots (functions of it) -> one renderer
(a Jinja2 template) -> a single self-contained HTML file: plots embedded as
PNG, tables sortable by an inline script, nothing fetched from the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.util
import io
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import pandas as pd

from bench import options, provenance, rundir
from reports import load, plots, tables

TEMPLATES = Path(__file__).parent / "templates"
MAX_ROWS = 2000  # rows of the all-results table in the HTML (results.csv has all)
# The heat map's alt text, which also finds it: `reports screenshot --selector 'img[alt^="heat map"]'`.
HEAT_MAP = "heat map of the time ratio, involution / Conv2D, over kernel size and groups"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _measured_by(rows: pd.DataFrame) -> str:
    """The sentence under a memory figure or table: how these rows' peak memory was measured."""
    methods = tables.memory_methods(rows)
    return "Peak memory measured by " + "; ".join(methods) + "." if methods else ""


def _fmt(value):
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return value


def _table(frame: pd.DataFrame, caption: str = "", limit: int | None = None) -> dict:
    shown = frame.head(limit) if limit else frame
    if limit and len(frame) > limit:
        caption = f"{caption} (first {limit} of {len(frame)} rows; all are in results.csv)".strip()
    shown = shown.map(_fmt) if hasattr(shown, "map") else shown.applymap(_fmt)
    body = shown.to_html(index=False, classes="sortable", border=0, na_rep="–", escape=True)
    return {"kind": "table", "html": body, "caption": caption}


def _figure(fig, alt: str, caption: str = "") -> dict | None:
    return None if fig is None else {"kind": "figure", "png": _png(fig), "alt": alt, "caption": caption}


def _environment(loaded: load.Loaded) -> list[dict]:
    blocks = []
    for run in loaded.runs:
        machine = run.get("machine", {}) or {}
        versions = run.get("versions", {}) or {}
        items = [
            ("run directory", run.get("run_dir", "")),
            ("backend", run.get("backend", "unknown")),
            ("device", f"{run.get('device_name', '')} ({run.get('device', '')})"),
            ("precision policy", run.get("precision", "unknown")),
            ("timing", f"{run.get('device_time_source') or 'latency rounds only'}"
                       + (f"; rounds until the median is within +-{run['precision_target']:.0%} or "
                          f"{_fmt(run.get('time_per_case'))} s"
                          if run.get("precision_target") is not None else "")),
            ("GPU conditions", run.get("gpu_conditions_source") or "not recorded"),
            ("sweep", f"{run.get('sweep', '')} ({run.get('sweep_source', '')})"
                      + (f", shard {run['shard'][0]}/{run['shard'][1]}" if run.get("shard") else "")),
            ("started", rundir.readable_stamp(run.get("started", ""))),
            ("code", f"git commit {provenance.short(run.get('git_commit'))}"
                     + (" with uncommitted changes" if run.get("git_dirty") else "")
                     if run.get("git_commit") else run.get("git_source", "not recorded")),
            ("CPU", f"{machine.get('cpu', '')} ({machine.get('cpu_count', '?')} logical cores)"
                    + (f"; {run['cpu_microarchitecture']}; {run.get('cpu_isa', '')}"
                       if run.get("cpu_microarchitecture") else "")),
            ("threads", run.get("thread_policy", "not recorded")
                        + (f" — {run['thread_setting']}" if run.get("thread_setting") else "")),
            ("passes", f"{run['passes']} process(es) timed each case" if run.get("passes") else "1"),
            ("C allocator", run.get("c_allocator") or "not recorded"),
            ("environment variables", ", ".join(f"{k}={v}" for k, v in (run.get("environment") or {}).items())
                                      or "none of those that change results"),
        ]
        if run.get("kernel_switches"):
            items.append(("fused kernels built with", options.switch_settings(run["kernel_switches"])))
        if machine.get("gpu_name"):
            items.append(("GPU", f"{machine['gpu_name']}, driver {machine.get('gpu_driver', '?')}, "
                                 f"{machine.get('gpu_memory', '?')}"))
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v and v != "None")))
        items.append(("Python / OS", f"{machine.get('python', '')} / {machine.get('platform', '')}"))
        blocks.append({"kind": "env", "items": items})
    machines = {provenance.machine_key(run) for run in loaded.runs}
    if len(machines) > 1:
        blocks.append({"kind": "note", "text": (
            f"Warning: these runs were measured on {len(machines)} different machines (CPU model, "
            "microarchitecture, instruction sets or GPU differ): compare figures within one machine only.")})
    variants = (loaded.table.loc[loaded.table[load.VARIANT] != "", [load.VARIANT, "run_dir"]].drop_duplicates()
                if load.VARIANT in loaded.table else pd.DataFrame())
    if len(variants):
        named = "; ".join(f"{name}: {run}" for name, run in sorted(variants.itertuples(index=False)))
        blocks.append({"kind": "note", "text": (
            f"{len(variants)} runs time the same cases in the same setup: each is a series of its own, its name "
            "ending in what its run.json records differently from the others' (commit, C allocator, package "
            "versions, settings), with its run directory's name where that does not tell it apart, and each run's "
            f"involution is compared with that run's Conv2D ({named}).")})
    allocators = {run.get("c_allocator") for run in loaded.runs if run.get("c_allocator")}
    if len(allocators) > 1:
        blocks.append({"kind": "note", "text": (
            f"Warning: these runs' processes used {len(allocators)} different C allocators or settings "
            f"({'; '.join(sorted(allocators))}): on a CPU the allocator moved involution's times by up to 4.5x and "
            "Conv2D's hardly at all (docs/PERF.md, sections 33 and 34).")})
    blocks.append({"kind": "note", "text": (
        "Times are medians of timed rounds after warm-up. Latency: one step per round, timed on the host, each round "
        "ending with the wait for the device. Device time (GPUs): the device's own time per step, by the method the "
        "row names; with a GPU every comparison uses it, elsewhere the latency. "
        "FLOPs and bytes are analytic (layers.counting); measured FLOPs come from the framework counter named in "
        "each row. Peak memory is measured (its source is named in each row).")})
    return blocks


def _summary(loaded: load.Loaded) -> list[dict]:
    t = loaded.table
    blocks = []
    not_run = tables.not_run(loaded.runs)
    if not t.empty:
        ok = int((t["status"] == "ok").sum())
        pairs = tables.matched(t)
        cards = [("cases", f"{len(t):,}"), ("ok", f"{ok:,}"), ("failed or unsupported", f"{len(t) - ok:,}")]
        runs = len(loaded.runs)
        if runs > 1:  # the table has a row per case and run; the cases not runnable are counted once each
            cards = [("runs", f"{runs}"), ("cases, each once per run", f"{len(t):,}"), *cards[1:]]
        if not not_run.empty:
            cards.append(("not runnable on the run's backend and device" + (", each once" if runs > 1 else ""),
                          f"{int(not_run['cases'].sum()):,}"))
        if not pairs.empty:
            weighed = pairs["memory_vs_conv2d"].notna()
            cards += [("involution faster than Conv2D",
                       f"{int((pairs['time_vs_conv2d'] < 1).sum())} / {len(pairs)}"),
                      ("involution lighter than Conv2D",
                       f"{int((pairs['memory_vs_conv2d'] < 1).sum())} / {int(weighed.sum())}")]
        blocks.append({"kind": "cards", "items": cards})
        invalid = tables.implausible_memory(t)
        if not invalid.empty:
            blocks.append({"kind": "note", "text": (
                f"{len(invalid)} row(s) measured a peak smaller than their step's own output (and gradients): "
                "their memory is left out of every memory figure and ratio (listed under Memory, FLOPs, "
                "parameters; the measured value is kept in results.csv as peak_memory_measured_bytes).")})
        wins = tables.wins(t)
        if not wins.empty:
            blocks.append({"kind": "note", "text": tables.interval_note(t)})
            blocks.append(_table(wins, "Where involution wins: per implementation, the cases that beat the "
                                       "Conv2D of the same work (same backend, device, sizes, dtype, mode, jit); "
                                       "faster_95 and slower_95: those whose time ratio (involution / Conv2D) "
                                       "has its 95% interval below or above 1; the median and best (lowest) "
                                       "time ratio."))
            best = tables.winning_cases(t)
            if not best.empty:
                blocks.append(_table(best, "Involution cases faster than Conv2D (time_vs_conv2d, involution's "
                                           "time over Conv2D's, below 1), best first."))
            else:
                blocks.append({"kind": "note", "text": "No involution case was faster than its Conv2D."})
        best = tables.best_implementation(t)
        if not best.empty:
            blocks.append(_table(best, "Best involution implementation per backend, device, mode and dtype: "
                                       "how often each is the fastest, and its geometric-mean slowdown against "
                                       "the fastest of each case (1.0 = always fastest)."))
        spread = tables.process_spread(t)
        if not spread.empty:
            blocks.append(_table(spread, "How far a case's median moves from one process to the next: the "
                                         "standard deviation of log medians between processes (0.05 is about "
                                         "5%), pooled over each series' cases, which every 95% interval of this "
                                         "report includes."))
        costs = tables.run_costs(loaded.costs, loaded.runs)
        if not costs.empty:
            blocks.append(_table(costs, "What each run cost, per session (a pass, or a resumed part): elapsed_s from "
                                        "the session's start (after Python and pytest started) to its last case's "
                                        "end, to the second; the part of it in timed rounds; and each case's "
                                        "overhead, all it took besides its timed rounds (building, compiling, "
                                        "warm-up, memory and counters)."))
        failures = tables.failures(t)
        if not failures.empty:
            blocks.append(_table(failures, "Cases that did not run (their rows are kept with the reason)."))
    if not not_run.empty:
        blocks.append(_table(not_run, (
            "Cases of the sweep that the run's backend and device cannot run: not timed, so no other table has them "
            "(each run's run.json names them all); runs that list the same reason are one row, each case counted "
            "once (runs: how many list it).")))
    if loaded.skipped:
        shown = "; ".join(loaded.skipped[:20]) + (f"; and {len(loaded.skipped) - 20} more" if len(
            loaded.skipped) > 20 else "")
        blocks.append({"kind": "note", "text": f"Skipped {len(loaded.skipped)} input line(s): {shown}"})
    return blocks


def _axes(loaded: load.Loaded) -> list[dict]:
    blocks = []
    for axis in tables.AXES:
        pivot = tables.time_pivot(loaded.table, axis) if not loaded.table.empty else pd.DataFrame()
        if pivot.empty:
            continue
        label = plots.LABELS.get(axis, axis)
        blocks.append({"kind": "heading", "text": f"By {label}"})
        figure = _figure(plots.time_vs_axis(loaded.table, axis), f"time against {label}")
        if figure:
            blocks.append(figure)
        blocks.append(_table(pivot, f"Median time (ms) by {label} (device time where measured, else latency); "
                                    "other axes at their most common value."))
        blocks.append(_table(tables.axis_table(loaded.table, axis),
                             f"By {label}: time with its 95% interval, peak memory, analytic GFLOPs and "
                             "parameters, and ratios to Conv2D (below 1: cheaper than Conv2D) with the time "
                             "ratio's 95% interval. " + tables.interval_note(loaded.table)))
    if not blocks:
        together = [plots.LABELS.get(axis, axis) for axis in tables.varying_axes(loaded.table)]
        text = ("No axis has two values among the successful involution cases." if not together else
                f"No axis varies alone among the successful involution cases: {', '.join(together)} change "
                "together, so there is no one-axis view; the summary and All results set every case against "
                "the Conv2D of the same sizes.")
        blocks.append({"kind": "note", "text": text})
    return blocks


def _costs(loaded: load.Loaded) -> list[dict]:
    t = loaded.table
    if t.empty:
        return []
    blocks = [
        _figure(plots.memory_vs_resolution(t), "peak memory against resolution",
                _measured_by(tables.axis_slice(t, "resolution"))),
        _figure(plots.flops_params_vs_kernel(t), "FLOPs and parameters against kernel size"),
        _figure(plots.time_ratio_heatmap(t), HEAT_MAP,
                "The fastest involution's time divided by Conv2D's, for each kernel size and group count (the "
                "other axes at their most common value); below 1 (blue) involution is faster. Hatched cells, "
                "marked ?, have a 95% interval of the ratio that includes 1. " + tables.interval_note(t)),
    ]
    blocks = [b for b in blocks if b]
    invalid = tables.implausible_memory(t)
    if not invalid.empty:
        blocks.append(_table(invalid, "Rows whose measured peak memory is below their step's own output (and "
                                      "gradients): the measurement missed memory, so it is not used."))
    if not any(b.get("alt") == HEAT_MAP for b in blocks):
        blocks.append({"kind": "note", "text": "No heat map: the runs do not vary kernel size and groups together "
                                               "(the full sweep does)."})
    return blocks


def _roofline(loaded: load.Loaded) -> list[dict]:
    fig = plots.roofline(loaded.table) if not loaded.table.empty else None
    return [_figure(fig, "roofline", "Each point a layer case: analytic FLOPs over analytic minimal bytes against "
                                     "achieved FLOP/s.")] if fig else []


def _spread(loaded: load.Loaded) -> list[dict]:
    fig = plots.rounds_spread(loaded.table, loaded.rounds)
    blocks = [_figure(fig, "spread of repeated rounds", "Round times over each case's median; the cases whose "
                                                        "10-90% range is widest are shown.")] if fig else []
    shaky = tables.unstable(loaded.table)
    if not shaky.empty:
        blocks.append(_table(shaky, "Unstable cases: their rounds stopped at the time budget before the median's "
                                    "95% interval was within the sweep's precision (half-width relative to the "
                                    "median shown)."))
    return blocks


def _scaling(loaded: load.Loaded) -> list[dict]:
    fits = tables.scaling_fits(loaded.table) if not loaded.table.empty else pd.DataFrame()
    if fits.empty:
        return []
    return [_table(fits, "Time against work (output pixels x K*K) along resolution and kernel size, per series: "
                         "least-squares fixed cost and cost per million units of work, with R^2. Where the fixed "
                         "cost is over half the time at the median work, the series is bound by per-step costs "
                         "(launches, dispatch, the host), not by its arithmetic or memory traffic.")]


def _profiles(loaded: load.Loaded) -> list[dict]:
    rows = tables.profiled(loaded.table)
    blocks = []
    for _, row in rows.iterrows():
        blocks.append({"kind": "heading", "text": row["case_id"]})
        trace_dir = row["trace_dir"]
        if row.get("backend") == "torch":
            blocks.append({"kind": "text", "text": f"PyTorch trace (Chrome/Perfetto JSON): {trace_dir}/trace.json. "
                                                   "TensorBoard's profile plugin cannot read PyTorch traces: open it "
                                                   "in chrome://tracing or the Perfetto UI."})
        else:
            blocks.append({"kind": "code", "text": f"tensorboard --logdir {Path(trace_dir).parents[2]}\n"
                                                   f"# Profile tab, session {Path(trace_dir).name}"})
        ops = row.get("top_ops")
        if isinstance(ops, list) and ops:
            blocks.append(_table(pd.DataFrame(ops), f"Top operations by self time ({row.get('top_ops_source', '')})."))
    return blocks


def _models(loaded: load.Loaded) -> list[dict]:
    blocks = []
    t = loaded.table
    frame = tables.models(t)
    if not frame.empty:
        pairs = tables.model_pairs(t)  # the comparison first, then every network's own figures
        if not pairs.empty:
            blocks.append(_table(pairs.drop(columns=["time_ratio_low", "time_ratio_high"]), (
                "Each involution network against its convolution counterpart (the same network with convolutions "
                "for its involutions) in the same run, mode, batch, resolution and dtype: time_ratio below 1 "
                "means the involution network's step is faster, with its 95% interval; memory, parameters and "
                "MACs as ratios too. " + tables.interval_note(t, "model"))))
        blocks.append(_table(frame, "Whole networks: median step latency, throughput (images/s), peak memory, "
                                    "parameters (M) and GMACs per image (analytic). "
                             + _measured_by(tables.ok_rows(t, "model"))))
        figure = _figure(plots.model_latency(t), "whole-network latency")
        if figure:
            blocks.append(figure)
    if loaded.histories is not None:
        h = loaded.histories
        blocks.append({"kind": "heading", "text": "The Keras example's experiment"})
        blocks.append(_table(tables.training_summary(h), (
            "Each model after its last epoch, with its parameters and mean time per epoch. The example (CIFAR-10, "
            "20 epochs, TensorFlow) reports val_accuracy 0.7304 for the conv model (319,178 trainable parameters) "
            "and 0.4719 for the involution model (13,074 trainable and 6 non-trainable), docs/SOURCES.md.")))
        figure = _figure(plots.training_curves(h), "training curves")
        if figure:
            blocks.append(figure)
    if loaded.kernel_maps:
        items = [(base64.b64encode(p.read_bytes()).decode("ascii"), html.unescape(p.stem.replace("_", " ")))
                 for p in loaded.kernel_maps]
        blocks.append({"kind": "heading", "text": "Involution kernel maps"})
        blocks.append({"kind": "note", "text": "For each image, the sum of every generated K x K kernel of inv_1, "
                                               "inv_2 and inv_3 (the example's figure)."})
        blocks.append({"kind": "images", "items": items})
    return blocks


def _conditions(loaded: load.Loaded) -> list[dict]:
    """GPU clocks, temperature and power during the timed rounds, and the
    throttled cases (rows measured with NVML only)."""
    summary = tables.gpu_conditions(loaded.table)
    if summary.empty:
        return []
    blocks = [_table(summary, "GPU conditions during the timed rounds, per run (NVML samples every 20 ms): "
                              "SM clock, highest temperature, median power, and the cases the GPU held back.")]
    throttled = tables.throttled(loaded.table)
    if throttled.empty:
        blocks.append({"kind": "note", "text": "No case was throttled: NVML reported no power, thermal or "
                                               "reliability slowdown during any case's timed rounds."})
    else:
        blocks.append(_table(throttled, "Throttled cases: the GPU was held back during their timed rounds, so "
                                        "their times may overstate the work's cost."))
    return blocks


def _all_results(loaded: load.Loaded) -> list[dict]:
    t = loaded.table
    if t.empty:
        return []
    frame = tables.all_results(t)
    block = _table(frame, "Every case: type in the box to keep the rows that contain every word typed; click a "
                          "header to sort.", limit=MAX_ROWS)
    block["filter"] = True
    return [block]


def write_tables(loaded: load.Loaded, folder: Path) -> list[Path]:
    written = []
    table = loaded.table.drop(columns=["top_ops", "time_rounds"], errors="ignore")
    csv = folder / rundir.CSV
    table.to_csv(csv, index=False)
    written.append(csv)
    if importlib.util.find_spec("pyarrow") is not None and not table.empty:
        parquet = folder / "results.parquet"
        table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(parquet)
        written.append(parquet)
    return written


def build_report(run_dirs: list[str | Path], output: str | Path | None = None) -> Path:
    """Write report.html (to `output`, or into the first run directory) and
    results.csv (+ results.parquet with pyarrow) beside it."""
    loaded = load.load_runs(run_dirs)
    output = Path(output) if output else Path(run_dirs[0]) / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    write_tables(loaded, output.parent)

    sections = [
        {"id": "environment", "title": "Environment", "blocks": _environment(loaded)},
        {"id": "summary", "title": "Summary", "blocks": _summary(loaded)},
        {"id": "axes", "title": "Per axis", "intro": "Each view moves one axis; the others sit at their most common "
                                                     "value among the successful involution cases.",
         "blocks": _axes(loaded)},
        {"id": "costs", "title": "Memory, FLOPs, parameters", "blocks": _costs(loaded)},
        {"id": "scaling", "title": "Fixed cost or work", "blocks": _scaling(loaded)},
        {"id": "roofline", "title": "Roofline", "blocks": _roofline(loaded)},
        {"id": "spread", "title": "Spread of rounds", "blocks": _spread(loaded)},
        {"id": "conditions", "title": "GPU conditions", "blocks": _conditions(loaded)},
        {"id": "profiles", "title": "Profiled cases", "blocks": _profiles(loaded)},
        {"id": "models", "title": "Whole networks", "blocks": _models(loaded)},
        {"id": "results", "title": "All results", "blocks": _all_results(loaded)},
    ]
    sections = [s for s in sections if s["blocks"]]
    backends = sorted(loaded.table["backend"].dropna().unique()) if "backend" in loaded.table else []
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    page = env.get_template("report.html.j2").render(
        title="involution-bench report",
        subtitle=f"Involution against Conv2D and DepthwiseConv2D · backends: {', '.join(backends) or 'none'}",
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        runs=loaded.runs,
        sections=sections,
    )
    output.write_text(page, encoding="utf-8")
    return output
