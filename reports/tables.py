"""Tables: short functions of the tidy table (`reports.load`).

A sweep that moves one axis at a time leaves the others at a base value; a
per-axis view keeps the rows where every other axis sits at its most common
value among the involution cases, so the same code reads one-axis sweeps,
grids and merged runs. Baselines (Conv2D, DepthwiseConv2D) are matched on
the axes they have: groups and reduction ratio do not apply to them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench import intervals, rundir
from bench.rundir import AXES as RUN_AXES
from bench.rundir import INVOLUTION_ONLY
from bench.rundir import SETUP as RUN_SETUP
from reports.load import BETWEEN_PROCESSES, ONE_PROCESS, TIME, VARIANT

# The run format's axes (bench.rundir, from bench.cases.Case) but what is
# compared: a per-axis view moves one of them (the compilation mode, jit,
# too) with the others fixed; baselines match involution on the axes they
# have, within one setup (backend, device, float32 precision policy, L2 mode,
# and the run where two runs time the same cases: reports.load._variants).
AXES = tuple(a for a in RUN_AXES if a not in ("layer", "implementation"))
SETUP = (*RUN_SETUP, VARIANT)
MATCH = (*SETUP, *(a for a in AXES if a not in INVOLUTION_ONLY))
METRICS = {TIME: "time (ms)", "peak_memory_mb": "peak memory (MB)", "gflops": "GFLOPs",
           "params": "parameters"}


def ok_rows(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The measured rows of one kind of case ("layer" or "model")."""
    if table.empty:
        return table
    return table[(table["status"] == "ok") & (table["kind"] == kind)]


def ok_layers(table: pd.DataFrame) -> pd.DataFrame:
    return ok_rows(table, "layer")


def _modal(values: pd.Series):
    counts = values.value_counts()
    return counts.index[0] if len(counts) else None


def with_time_interval(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the time's 95% interval from the rounds where a row has none
    (rows written before the sweep recorded it); only for the few rows a view shows."""
    low, high = f"{TIME}_ci_low", f"{TIME}_ci_high"
    missing = frame[low].isna() & frame["time_rounds"].map(lambda r: isinstance(r, list) and len(r) >= 3)
    if not missing.any():
        return frame
    frame = frame.copy()
    for index in frame.index[missing]:
        a, b = intervals.median_interval(frame.at[index, "time_rounds"])
        frame.at[index, low], frame.at[index, high] = a * 1e3, b * 1e3
    return frame


def axis_slice(table: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Layer rows in which only `axis` (and the layer/implementation) varies.

    Per backend and device, the other axes are fixed at the combination under
    which the involution cases take the most values of `axis` (with a
    one-axis-at-a-time sweep: the base case). Empty when no such combination
    has two values.
    """
    rows = ok_layers(table)
    if rows.empty:
        return rows
    parts = []
    others = [a for a in AXES if a != axis]
    for _, group in rows.groupby(list(SETUP), sort=True):
        inv = group[group["layer"] == "involution"]
        if inv.empty:
            continue
        spread = inv.groupby(others, dropna=False)[axis].agg(["nunique", "size"])
        spread = spread[spread["nunique"] >= 2]
        if spread.empty:
            continue
        fixed = dict(zip(others, spread.sort_values(["nunique", "size"], ascending=False).index[0], strict=True))
        chosen = inv[_matches(inv, fixed)]
        base = group[group["layer"] != "involution"]
        base = base[_matches(base, {a: v for a, v in fixed.items() if a not in INVOLUTION_ONLY})]
        if axis in INVOLUTION_ONLY and len(base):
            # The baselines do not have this axis: the same row at every value.
            base = pd.concat([base.assign(**{axis: v}) for v in sorted(chosen[axis].unique())], ignore_index=True)
        parts += [chosen, base]
    return pd.concat(parts, ignore_index=True) if parts else rows.iloc[0:0]


def varying_axes(table: pd.DataFrame) -> list[str]:
    """The axes with two or more values among the successful involution
    cases, in `AXES` order. Where no axis has a one-axis view (`axis_slice`
    empty for every axis), these change together, as the RedNet stages'
    resolution, channels and groups do."""
    rows = ok_layers(table)
    if rows.empty:
        return []
    inv = rows[rows["layer"] == "involution"]
    return [axis for axis in AXES if inv[axis].nunique() >= 2]


def _matches(frame: pd.DataFrame, fixed: dict) -> np.ndarray:
    keep = np.ones(len(frame), bool)
    for a, value in fixed.items():
        keep &= (frame[a] == value).to_numpy()
    return keep


# What the ratio intervals need of each side of a pair.
RATIO_COLUMNS = (TIME, "time_rounds", "time_log_var", "time_log_df")


def _beside(rows: pd.DataFrame, baselines: pd.DataFrame, on: list[str], suffix: str, extra: tuple = (),
            how: str = "inner") -> pd.DataFrame:
    """`rows` with, on each, the columns a ratio needs (`RATIO_COLUMNS`, peak
    memory and `extra`) of the baseline row that matches it `on`, named with
    `suffix` (the first baseline where several match)."""
    base = baselines[[*on, *RATIO_COLUMNS, "peak_memory_mb", *extra]].drop_duplicates(subset=on)
    return rows.merge(base, on=on, how=how, suffixes=("", suffix))


def _ratio_intervals(frame: pd.DataFrame, top: str, bottom: str) -> tuple[list[float], list[float]]:
    """The 95% interval of each row's ratio TIME{top} / TIME{bottom} (top,
    bottom: the two cases' column suffixes). Where both times carry the
    variation between processes (`reports.load._between_processes`), a t
    interval of the log ratio (Welch's degrees of freedom); else the
    bootstrap interval of the ratio of the medians of the two cases' rounds."""
    lows, highs = [], []
    for row in frame[[f"{c}{suffix}" for c in RATIO_COLUMNS for suffix in (top, bottom)]].itertuples(index=False):
        (t_top, t_bottom, r_top, r_bottom, v_top, v_bottom, f_top, f_bottom) = row
        if v_top >= 0 and v_bottom >= 0 and t_top > 0 and t_bottom > 0:  # NaN compares False
            freedom = intervals.welch_freedom((v_top, v_bottom), (f_top, f_bottom))
            low, high = intervals.log_interval(t_top / t_bottom, v_top + v_bottom, freedom)
        else:
            r_top = r_top if isinstance(r_top, (list, np.ndarray)) else []
            r_bottom = r_bottom if isinstance(r_bottom, (list, np.ndarray)) else []
            low, high = intervals.ratio_interval(r_top, r_bottom)
        lows.append(low)
        highs.append(high)
    return lows, highs


def _with_ratios(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    joined = _beside(frame, frame[frame["layer"] == "conv2d"], by, "_conv2d", how="left")
    low, high = _ratio_intervals(joined, "", "_conv2d")
    baseline = (frame["layer"] == "conv2d").to_numpy()  # Conv2D against itself: 1 exactly, no interval
    low, high = np.where(baseline, np.nan, low), np.where(baseline, np.nan, high)
    frame = frame.assign(
        time_vs_conv2d=joined[TIME] / joined[f"{TIME}_conv2d"], time_vs_conv2d_low=low, time_vs_conv2d_high=high,
        memory_vs_conv2d=joined["peak_memory_mb"] / joined["peak_memory_mb_conv2d"],
    )
    return frame


def axis_table(table: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Per value of `axis`: every series' latency, memory, FLOPs and params,
    and involution/Conv2D ratios (a ratio < 1 means involution is cheaper)."""
    frame = axis_slice(table, axis)
    if frame.empty:
        return frame
    frame = _with_ratios(with_time_interval(frame), [axis, *SETUP])
    frame = frame.assign(time_ci=_interval_text(frame[f"{TIME}_ci_low"], frame[f"{TIME}_ci_high"]),
                         time_vs_conv2d_ci=_interval_text(frame["time_vs_conv2d_low"], frame["time_vs_conv2d_high"]))
    columns = [axis, "series", *METRICS, "time_ci", "time_vs_conv2d", "time_vs_conv2d_ci", "memory_vs_conv2d"]
    return frame[columns].sort_values([axis, TIME]).reset_index(drop=True)


def time_pivot(table: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Median time (ms): a row per axis value, a column per series."""
    frame = axis_slice(table, axis)
    if frame.empty:
        return frame
    pivot = frame.pivot_table(index=axis, columns="series", values=TIME, aggfunc="median")
    pivot = pivot[sorted(pivot.columns, key=lambda s: (not s.startswith("involution"), s))]
    pivot.columns.name = None
    return pivot.reset_index()


def matched(table: pd.DataFrame) -> pd.DataFrame:
    """Every involution case next to the Conv2D case of the same work."""
    rows = ok_layers(table)
    inv = rows[rows["layer"] == "involution"]
    conv = rows[rows["layer"] == "conv2d"]
    if inv.empty or conv.empty:
        return pd.DataFrame()
    pairs = _beside(inv, conv, list(MATCH), "_conv2d", extra=("case_id",))
    # Every ratio of the report is involution over its baseline (below 1: involution is cheaper), the
    # direction of the axis tables, the networks' pairs, `reports.compare` and bench.targets' targets.
    low, high = _ratio_intervals(pairs, "", "_conv2d")
    return pairs.assign(time_vs_conv2d=pairs[TIME] / pairs[f"{TIME}_conv2d"], time_vs_conv2d_low=low,
                        time_vs_conv2d_high=high,
                        memory_vs_conv2d=pairs["peak_memory_mb"] / pairs["peak_memory_mb_conv2d"])


def process_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and series timed in several processes: how far a case's
    median moves from one process to the next (the standard deviation of log
    medians, pooled over the series' cases), what every 95% interval of the
    report rests on (`reports.load._between_processes`)."""
    rows = ok_layers(table)
    rows = rows[rows["interval_basis"] == BETWEEN_PROCESSES] if not rows.empty else rows
    if rows.empty:
        return pd.DataFrame()
    out = rows.groupby(["backend", "series", "run_dir"]).agg(
        cases=("case_id", "count"), processes_per_case=("passes_timed", "median"),
        spread_between_processes=("process_sigma", "first"), degrees_of_freedom=("time_log_df", "first"))
    return out.reset_index().drop(columns="run_dir").sort_values(["backend", "series"]).reset_index(drop=True)


def interval_note(table: pd.DataFrame, kind: str = "layer") -> str:
    """One sentence: what the 95% intervals of the measured cases of `kind`
    ("layer" or "model") rest on (a failed case has no interval)."""
    rows = ok_rows(table, kind)
    bases = set(rows["interval_basis"]) if "interval_basis" in rows and not rows.empty else {ONE_PROCESS}
    if bases == {BETWEEN_PROCESSES}:
        return ("95% intervals include the variation between processes: each case was timed in several "
                "processes, and the spread of a median from one to the next, pooled over each series' cases, "
                "gives every time and ratio a t interval on the log scale.")
    rest = ("rest on the rounds of one process and leave out the variation between processes, which on a CPU "
            "can move a median by more than its interval (time each case in several processes, --passes 2, to "
            "include it).")
    return ("95% intervals of series timed in several processes include the variation between them; the others "
            + rest) if BETWEEN_PROCESSES in bases else "95% intervals " + rest


def wins(table: pd.DataFrame) -> pd.DataFrame:
    """Per involution series: how many cases beat Conv2D on time or memory,
    and the median and best (lowest) involution/Conv2D time ratio."""
    pairs = matched(table)
    if pairs.empty:
        return pairs
    pairs = pairs.assign(surely_faster=pairs["time_vs_conv2d_high"] < 1,
                         surely_slower=pairs["time_vs_conv2d_low"] > 1)
    out = pairs.groupby(["backend", "series"]).agg(
        cases=("case_id", "count"),
        faster=("time_vs_conv2d", lambda s: int((s < 1).sum())),
        faster_95=("surely_faster", "sum"),
        slower_95=("surely_slower", "sum"),
        lighter=("memory_vs_conv2d", lambda s: int((s < 1).sum())),
        median_time_vs_conv2d=("time_vs_conv2d", "median"),
        best_time_vs_conv2d=("time_vs_conv2d", "min"),
    )
    return out.reset_index().sort_values(["backend", "median_time_vs_conv2d"])


def winning_cases(table: pd.DataFrame, limit: int = 50) -> pd.DataFrame:
    """Involution cases faster than Conv2D, best (lowest time ratio) first."""
    pairs = matched(table)
    if pairs.empty:
        return pairs
    best = pairs[pairs["time_vs_conv2d"] < 1].sort_values("time_vs_conv2d").head(limit)
    best = best.assign(time_vs_conv2d_ci=_interval_text(best["time_vs_conv2d_low"], best["time_vs_conv2d_high"]))
    return best[["case_id", "series", "time_basis", TIME, f"{TIME}_conv2d", "time_vs_conv2d", "time_vs_conv2d_ci",
                 "memory_vs_conv2d"]].reset_index(drop=True)


def best_implementation(table: pd.DataFrame) -> pd.DataFrame:
    """Per setup (backend, device, precision policy, L2), mode and dtype: the involution implementation that
    is fastest most often, and every implementation's geometric-mean slowdown
    against the fastest of each case."""
    rows = ok_layers(table)
    inv = rows[(rows["layer"] == "involution") & (rows["implementation"] != "auto")]
    if inv.empty:
        return pd.DataFrame()
    group = [*SETUP, "mode", "dtype"]
    geometry = ["kernel_size", "stride", "groups", "reduction_ratio", "resolution", "channels", "batch", "jit"]
    fastest = inv.groupby(group + geometry)[TIME].transform("min")
    inv = inv.assign(slowdown=inv[TIME] / fastest, fastest=inv[TIME] == fastest)
    out = inv.groupby([*group, "implementation"]).agg(
        cases=("case_id", "count"), fastest_in=("fastest", "sum"),
        geomean_slowdown=("slowdown", lambda s: float(np.exp(np.log(s).mean()))),
    ).reset_index()
    out = out.sort_values([*group, "geomean_slowdown"]).reset_index(drop=True)
    return out.drop(columns=VARIANT) if (out[VARIANT] == "").all() else out  # one run per setup: no column


def statuses(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()
    return table.groupby(["backend", "status"]).size().rename("cases").reset_index()


def failures(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()
    return table[table["status"] != "ok"][["case_id", "backend", "status", "error"]].reset_index(drop=True)


def not_run(runs: list[dict]) -> pd.DataFrame:
    """Per backend, device, sweep and reason, the sweep's cases that the
    backend and device cannot run (run.json's `not_run`): they have no rows,
    so no other table shows them. Runs that list the same (shards, passes of
    a sweep run again) are one row: `cases` counts distinct cases, `runs` the
    runs that list them."""
    found: dict[tuple, tuple[dict, int]] = {}  # key -> (its case ids in the sweep's order, runs)
    for run in runs:
        for reason, ids in (run.get("not_run") or {}).items():
            if ids:
                key = (run.get("backend"), run.get("device"), run.get("sweep"), reason)
                cases, count = found.get(key, ({}, 0))
                found[key] = ({**cases, **dict.fromkeys(ids)}, count + 1)
    return pd.DataFrame([{"backend": backend, "device": device, "sweep": sweep, "cases": len(cases), "runs": count,
                          "reason": reason, "example": next(iter(cases))}
                         for (backend, device, sweep, reason), (cases, count) in found.items()])


def models(table: pd.DataFrame) -> pd.DataFrame:
    rows = ok_rows(table, "model")
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(gmacs=rows["macs"] / rows["batch"] / 1e9, params_m=rows["params"] / 1e6)
    columns = ["layer", "series", "backend", "mode", "batch", "resolution", "time_basis", TIME, "latency_ms",
               "throughput",
               "peak_memory_mb", "params_m", "gmacs"]
    return rows[[c for c in columns if c in rows]].sort_values(["mode", "layer"]).reset_index(drop=True)


# What must match for two networks' steps to be compared: the run's setup and the case's axes a model has.
MODEL_MATCH = (*SETUP, "mode", "batch", "resolution", "dtype", "jit")


def model_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Each involution network next to its convolution counterpart (the
    row's `counterpart`, from the registry: RedNet-50 and ResNet-50) at the
    same setup, mode, batch, resolution, dtype and compilation: the time
    ratio (below 1: the involution network is faster) with its 95% interval,
    and the ratios of peak memory, parameters and MACs."""
    rows = ok_rows(table, "model")
    if rows.empty or "counterpart" not in rows:
        return pd.DataFrame()
    inv = rows[rows["counterpart"].notna()]
    conv = rows.drop(columns="counterpart").rename(columns={"layer": "counterpart"})  # matched by its name
    pairs = _beside(inv, conv, [*MODEL_MATCH, "counterpart"], "_counterpart", extra=("params", "macs"))
    if pairs.empty:
        return pd.DataFrame()
    low, high = _ratio_intervals(pairs, "", "_counterpart")
    pairs = pairs.assign(
        time_ratio=pairs[TIME] / pairs[f"{TIME}_counterpart"], time_ratio_low=low, time_ratio_high=high,
        time_ratio_ci=_interval_text(pd.Series(low), pd.Series(high)),
        memory_ratio=pairs["peak_memory_mb"] / pairs["peak_memory_mb_counterpart"],
        params_ratio=pairs["params"] / pairs["params_counterpart"],
        macs_ratio=pairs["macs"] / pairs["macs_counterpart"])
    # The ratios first (they fit on the page); series: the implementation and, where two runs time the
    # same cases, the run (reports.load._variants).
    columns = ["backend", "series", "counterpart", "mode", "time_ratio", "time_ratio_ci", "memory_ratio",
               "params_ratio", "macs_ratio", TIME, f"{TIME}_counterpart", "time_basis", "layer",
               "implementation_resolved", "batch", "resolution", "dtype", "time_ratio_low", "time_ratio_high"]
    order = [c for c in [*SETUP, "mode", "layer"] if c in pairs]
    return pairs.sort_values(order)[[c for c in columns if c in pairs]].reset_index(drop=True)


def profiled(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty or "trace_dir" not in table:
        return pd.DataFrame()
    return table[table["trace_dir"].notna() & (table["trace_dir"] != "")]


def run_costs(costs: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """What each session of each run cost (`costs`: `load.Loaded.costs`, a
    row per case and pass; a pass, or a resumed part of a
    run, is a session: run.json's `sessions`): its cases, the time from its
    start (after Python and pytest started) to its last case's end (rows'
    `finished`, to the second), the part of it in timed rounds, and the
    per-case overhead (everything else a case took: building, compiling,
    warm-up, memory and counters). A row belongs to the session whose start
    last precedes its end."""
    if costs.empty or not {"finished", "wall_s", "overhead_s"} <= set(costs):
        return pd.DataFrame()
    out = []
    for run in runs:
        rows = costs[costs["run_dir"] == run.get("run_dir")]
        starts = sorted(when.timestamp() for when in (rundir.parse_stamp(session.get("started"))
                                                       for session in run.get("sessions") or [run]) if when)
        ends = np.array([when.timestamp() if when else np.nan for when in rows["finished"].map(rundir.parse_stamp)])
        known = ~np.isnan(ends)
        if not starts or not known.any():
            continue
        rows, ends = rows[known], ends[known]
        session = np.searchsorted(starts, ends, side="right") - 1  # -1: finished before the first start
        for index, start in enumerate(starts):
            mine = rows[session == index]
            if mine.empty:
                continue
            overhead = mine["overhead_s"].astype(float)
            out.append({"backend": run.get("backend"), "device_name": run.get("device_name"),
                        "sweep": run.get("sweep"), "session": index + 1, "cases": len(mine),
                        "ok": int((mine["status"] == "ok").sum()),
                        "elapsed_s": float(ends[session == index].max() - start),
                        "timed_rounds_s": float((mine["wall_s"].astype(float) - overhead).sum()),
                        "median_overhead_s": float(overhead.median()), "total_overhead_s": float(overhead.sum()),
                        "run": Path(str(run.get("run_dir"))).name})
    return pd.DataFrame(out)


def gpu_conditions(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: the GPU's SM clock, temperature and power over its cases'
    timed rounds, and how many cases were throttled (NVML rows only)."""
    if table.empty or "gpu_sm_clock_mhz" not in table:
        return pd.DataFrame()
    rows = table[pd.to_numeric(table["gpu_sm_clock_mhz"], errors="coerce").notna()]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(throttled=rows["throttled"].fillna(False).astype(bool))
    out = rows.groupby(["run_dir", "backend", "device_name"]).agg(
        cases=("case_id", "count"), sm_clock_mhz_min=("gpu_sm_clock_mhz", "min"),
        sm_clock_mhz_median=("gpu_sm_clock_mhz", "median"), temperature_c_max=("gpu_temperature_c", "max"),
        power_w_median=("gpu_power_w", "median"), power_w_max=("gpu_power_w", "max"),
        throttled_cases=("throttled", "sum"),
    )
    return out.reset_index()


def throttled(table: pd.DataFrame) -> pd.DataFrame:
    """The cases during whose timed rounds NVML saw the GPU held back."""
    if table.empty or "throttled" not in table:
        return pd.DataFrame()
    rows = table[table["throttled"].fillna(False).astype(bool)]
    columns = ["case_id", "backend", "throttle_reasons", "gpu_sm_clock_mhz", "gpu_temperature_c", "gpu_power_w",
               TIME]
    return rows[columns].reset_index(drop=True)


# The all-results table: identity, every axis, then the measurements, named
# with their units.
ALL_RESULTS = {
    "case_id": "case", "status": "status", "backend": "backend", "device_name": "device", "layer": "layer",
    "implementation": "implementation", "implementation_resolved": "runs as", "kernel_size": "K",
    "stride": "stride", "groups": "groups", "reduction_ratio": "reduction", "resolution": "resolution (px)",
    "channels": "channels", "batch": "batch", "dtype": "dtype", "mode": "mode", "jit": "jit",
    "time_basis": "time basis", TIME: "time (ms)", "latency_ms": "latency (ms)", "device_ms": "device time (ms)",
    "rounds": "rounds", "stopped_by": "stopped by", "peak_memory_mb": "peak memory (MB)", "gflops": "GFLOPs",
    "flops_measured": "measured FLOPs", "params": "parameters", "compile_seconds": "compile (s)",
    "compile_cache": "compile cache",
    "throughput": "throughput (images/s)", "gbytes_per_s": "GB/s", "throttled": "throttled",
}


def all_results(table: pd.DataFrame) -> pd.DataFrame:
    """Every row, one column per axis and per measurement, units in the names."""
    columns = [c for c in ALL_RESULTS if c in table]
    return table[columns].sort_values("case_id").rename(columns=ALL_RESULTS).reset_index(drop=True)


def memory_methods(frame: pd.DataFrame) -> list[str]:
    """How these rows' peak memory was measured, each way once: their
    `peak_memory_source` without the byte counts some sources quote (the
    TensorFlow CPU source gives its two readings of that row)."""
    if frame.empty or "peak_memory_source" not in frame:
        return []
    sources = frame.loc[frame["peak_memory_mb"].notna(), "peak_memory_source"].dropna().astype(str)
    return sorted(sources.str.replace(r": [\d,]+ B\b", "", regex=True).unique())


def implausible_memory(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose measured peak was below the step's own output: left out of
    every memory figure (their peak_memory_bytes is empty)."""
    if table.empty or "peak_memory_valid" not in table:
        return pd.DataFrame()
    rows = table[table["peak_memory_valid"].astype("boolean").fillna(True) == False]  # noqa: E712
    columns = ["case_id", "backend", "peak_memory_measured_bytes", "peak_memory_floor_bytes", "peak_memory_source"]
    return rows[[c for c in columns if c in rows]].reset_index(drop=True)


def _interval_text(low: pd.Series, high: pd.Series) -> list[str]:
    return [f"{a:.3g}–{b:.3g}" if np.isfinite(a) and np.isfinite(b) else "–"
            for a, b in zip(pd.to_numeric(low), pd.to_numeric(high), strict=True)]


def unstable(table: pd.DataFrame, limit: int = 100) -> pd.DataFrame:
    """Cases whose timing stopped at its time budget before its median was
    precise (the 95% interval of its rounds wider than the sweep's precision)."""
    if table.empty or "stopped_by" not in table:
        return pd.DataFrame()
    device = table.get("device_stopped_by", pd.Series(index=table.index, dtype=object))
    stopped = device.where(table["device_ms"].notna(), table["stopped_by"])
    rows = table[(table["status"] == "ok") & (stopped == "time")]
    if rows.empty:
        return pd.DataFrame()
    width = (rows[f"{TIME}_rounds_ci_high"] - rows[f"{TIME}_rounds_ci_low"]) / 2 / rows[TIME]
    out = rows.assign(interval_half_width=width, rounds_timed=rows["device_rounds"].where(
        rows["device_ms"].notna(), rows["rounds"]) if "device_rounds" in rows else rows["rounds"])
    columns = ["case_id", "backend", "time_basis", TIME, "interval_half_width", "rounds_timed"]
    return out.sort_values("interval_half_width", ascending=False)[columns].head(limit).reset_index(drop=True)


def scaling_fits(table: pd.DataFrame) -> pd.DataFrame:
    """Per series, along resolution and kernel size: a least-squares line of
    time against work (output pixels x K*K), `scipy.stats.linregress`: the
    fixed cost (intercept), the cost per unit of work (slope) and R^2. Where the
    fixed cost is more than half the time at the median work, the series is
    bound by launch, dispatch or other per-step costs there, not by its work."""
    from scipy import stats

    out = []
    for axis in ("resolution", "kernel_size"):
        frame = axis_slice(table, axis)
        if frame.empty:
            continue
        frame = frame.assign(work=frame["batch"] * (np.ceil(frame["resolution"] / frame["stride"])) ** 2
                             * frame["kernel_size"] ** 2)
        for (backend, series), part in frame.groupby(["backend", "series"]):
            part = part.dropna(subset=[TIME])
            if part["work"].nunique() < 3:
                continue
            fit = stats.linregress(part["work"].astype(float), part[TIME].astype(float))
            typical = float(part["work"].median())
            share = fit.intercept / (fit.intercept + fit.slope * typical) if fit.intercept + fit.slope * typical \
                else float("nan")
            out.append({"axis": axis, "backend": backend, "series": series, "points": len(part),
                        "fixed_ms": fit.intercept, "ms_per_million_work": fit.slope * 1e6, "r2": fit.rvalue ** 2,
                        "fixed_share_at_median_work": share,
                        "bound_by": "fixed cost (launch/dispatch)" if share > 0.5 else "work"})
    return pd.DataFrame(out)


def training_summary(histories: pd.DataFrame) -> pd.DataFrame:
    """Per model and data set: the last epoch's losses and accuracies, the
    parameters and the mean seconds per epoch."""
    keys = [k for k in ("dataset", "backend", "model") if k in histories]
    last = histories.sort_values("epoch").groupby(keys).tail(1).set_index(keys)
    seconds = histories.groupby(keys)["epoch_seconds"].mean().rename("mean_epoch_seconds")
    columns = [c for c in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "trainable_params",
                           "non_trainable_params") if c in last]
    return last[columns].join(seconds).reset_index()
