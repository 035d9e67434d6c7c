"""Run directories -> one tidy table.

One row per case and run, a column per axis and per metric. Everything the
reports show is a function of this table (and of the per-round table for the
spread of repeated rounds). Bad input never raises a traceback: a missing
directory or a run without any valid row is a `ReportError` naming the path;
a line cut by a crash, a line of another schema version or a foreign JSON
document is skipped and listed in `Loaded.skipped`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import intervals, provenance
from bench.rundir import HISTORY, KERNEL_MAPS, META, RESULTS, SCHEMA, SETUP

TIME = "time_ms"  # the column every comparison of speed uses (see _derive)
# What a time's 95% interval rests on (column interval_basis; see _between_processes).
BETWEEN_PROCESSES = "between processes"
ONE_PROCESS = "rounds of one process"
REQUIRED = ("case_id", "layer", "implementation", "status")
# The column that tells apart runs timing the same cases in the same setup (see _variants).
VARIANT = "variant"


class ReportError(Exception):
    """Input the reports cannot use at all; the message names the file."""


# A row's cost: its run, case and pass, when it finished, and its time in all and outside the timed rounds.
COST_COLUMNS = ("run_dir", "case_id", "pass", "status", "finished", "wall_s", "overhead_s")


@dataclass
class Loaded:
    table: pd.DataFrame
    rounds: pd.DataFrame
    runs: list[dict]
    skipped: list[str] = field(default_factory=list)
    histories: pd.DataFrame | None = None
    kernel_maps: list[Path] = field(default_factory=list)
    # What each case cost in each pass, before the passes merge (`tables.run_costs`).
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)


def _read_rows(path: Path, skipped: list[str]) -> list[dict]:
    rows = []
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as error:
        raise ReportError(f"{path}: cannot be read ({error.strerror})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                skipped.append(f"{path}:{number}: not a complete JSON line (a run cut short?)")
                continue
            if not isinstance(row, dict) or any(key not in row for key in REQUIRED):
                skipped.append(f"{path}:{number}: not a result row (missing {', '.join(REQUIRED)})")
                continue
            if row.get("schema") != SCHEMA:
                skipped.append(f"{path}:{number}: schema version {row.get('schema')!r}, this report reads {SCHEMA}")
                continue
            rows.append(row)
    return rows


_FIX = f"give the folder of the {RESULTS} a sweep names at its end ('results: ...')"


def _not_run_text(meta: Path) -> str:
    """How many of the run's cases its backend and device could not run, from run.json."""
    try:
        not_run = json.loads(meta.read_text()).get("not_run") or {}
        count = sum(len(ids) for ids in not_run.values())
    except (OSError, ValueError, AttributeError, TypeError):
        return f"{META} unreadable"
    return (f"{count} case(s) its backend and device cannot run, listed by reason in {META}'s not_run" if count
            else f"{META} lists no case its backend and device cannot run")


def load_runs(paths: list[str | Path]) -> Loaded:
    """Load run directories (shards, backends, machines) into one table."""
    if not paths:
        raise ReportError("no run directory given")
    skipped: list[str] = []
    rows, rounds, runs, histories, maps = [], [], [], [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportError(f"{path}: no such run directory; {_FIX}")
        if not path.is_dir():
            raise ReportError(f"{path}: not a directory (give the run directory that holds {RESULTS})")
        results = path / RESULTS
        history = path / HISTORY
        if not results.exists() and not history.exists() and not list(path.glob(KERNEL_MAPS)):
            if (path / META).exists():  # a run in which no case finished (or none could run here)
                raise ReportError(f"{path}: no case of this run finished, so it has no {RESULTS} "
                                  f"({_not_run_text(path / META)}); give the run directory of a sweep that "
                                  "finished at least one case")
            raise ReportError(f"{path}: no {RESULTS} (nor {HISTORY}): not a benchmark run directory; {_FIX}")
        meta = {}
        if (path / META).exists():
            try:
                meta = json.loads((path / META).read_text())
                if not isinstance(meta, dict):
                    raise ValueError
            except ValueError:
                skipped.append(f"{path / META}: not valid JSON, environment details unknown")
                meta = {}
        runs.append({"run_dir": str(path), **meta})
        if results.exists():
            for row in _read_rows(results, skipped):
                row["run_dir"] = str(path)
                latency = row.pop("rounds_s", None) or []
                device = row.pop("device_rounds_s", None) or []
                # The rounds of the time every comparison uses (device time where measured).
                row["time_rounds"] = device or latency
                for kind, values in (("latency", latency), ("device", device)):
                    for index, seconds in enumerate(values):
                        rounds.append({"case_id": row["case_id"], "run_dir": str(path), "kind": kind,
                                       "round": index, "seconds": seconds})
                rows.append(row)
        if history.exists():
            for row in _read_rows_plain(history, skipped):
                histories.append({**row, "run_dir": str(path)})
        maps += sorted(path.glob(KERNEL_MAPS))
    if not rows and not histories and not maps:
        raise ReportError(f"{', '.join(map(str, paths))}: no valid result rows"
                          + (f" ({len(skipped)} line(s) skipped; the first: {skipped[0]})" if skipped
                             else " (an empty run: no case finished)")
                          + "; give the run directory of a sweep that finished at least one case")
    table, costs = pd.DataFrame(rows), pd.DataFrame()
    if not table.empty:
        if "pass" not in table:
            table["pass"] = 1
        table["pass"] = table["pass"].fillna(1).astype(int)
        # One row per case, pass and run: a resumed run may repeat a case cut short.
        table = table.drop_duplicates(subset=["run_dir", "case_id", "pass"], keep="last").reset_index(drop=True)
        costs = table[[c for c in COST_COLUMNS if c in table]].copy()
        table = _derive(_merge_passes(table), runs)
    return Loaded(
        table=table,
        rounds=pd.DataFrame(rounds, columns=["case_id", "run_dir", "kind", "round", "seconds"]),
        runs=runs,
        skipped=skipped,
        histories=pd.DataFrame(histories) if histories else None,
        kernel_maps=maps,
        costs=costs,
    )


def _read_rows_plain(path: Path, skipped: list[str]) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "epoch" not in row:
                    raise ValueError
                out.append(row)
            except ValueError:
                if line.strip():
                    skipped.append(f"{path}:{number}: not a training-history row")
    return out


def _merge_passes(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case and run out of its passes (processes): the median of
    the passes' medians, every pass's median kept (`pass_medians_s`, what
    `reports compare` tests between runs), the rounds pooled, and `ok` only
    if every pass was."""
    for column in ("median_s", "device_median_s"):
        if column not in table:
            table[column] = float("nan")
    compared = pd.to_numeric(table["device_median_s"], errors="coerce").fillna(
        pd.to_numeric(table["median_s"], errors="coerce"))
    table = table.assign(_compared=compared)
    if table.groupby(["run_dir", "case_id"]).size().max() == 1:
        return table.assign(pass_medians_s=[[v] if v == v else [] for v in compared],
                            passes_timed=1).drop(columns="_compared")
    merged = []
    for _, group in table.groupby(["run_dir", "case_id"], sort=False):
        group = group.sort_values("pass")
        row = group.iloc[0].to_dict()  # pass 1: the only one with the memory and FLOP counters
        ok = group[group["status"] == "ok"]
        row["passes_timed"] = len(ok)
        row["pass_medians_s"] = [float(v) for v in ok["_compared"] if v == v]
        if len(group) > 1:
            row["status"] = "ok" if len(ok) == len(group) else group.loc[group["status"] != "ok", "status"].iloc[0]
            if len(ok):
                for column in ("median_s", "device_median_s"):
                    values = pd.to_numeric(ok[column], errors="coerce").dropna()
                    row[column] = float(values.median()) if len(values) else float("nan")
                row["time_rounds"] = [v for rounds in ok["time_rounds"] for v in (rounds or [])]
        merged.append(row)
    return pd.DataFrame(merged).drop(columns="_compared")


def _derive(table: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """Columns every view uses: readable units, the compared time and a series label."""
    for column in ("median_s", "device_median_s", "peak_memory_bytes", "flops", "params", "flops_measured",
                   "bytes_min", "median_ci_low_s", "median_ci_high_s", "device_median_ci_low_s",
                   "device_median_ci_high_s"):
        if column not in table:
            table[column] = float("nan")
    # Rows written before a field existed: CPU runs, full FP32, caches warm.
    table["tf32"] = table["tf32"].fillna(False).astype(bool) if "tf32" in table else False
    table["l2"] = table["l2"].fillna("warm") if "l2" in table else "warm"
    table["latency_ms"] = pd.to_numeric(table["median_s"], errors="coerce") * 1e3
    table["device_ms"] = pd.to_numeric(table["device_median_s"], errors="coerce") * 1e3
    # The time every comparison uses: the device's where it was measured (GPUs), else the latency.
    table[TIME] = table["device_ms"].fillna(table["latency_ms"])
    device = table["device_ms"].notna()
    for end in ("low", "high"):
        latency = pd.to_numeric(table[f"median_ci_{end}_s"], errors="coerce") * 1e3
        table[f"{TIME}_ci_{end}"] = (pd.to_numeric(table[f"device_median_ci_{end}_s"], errors="coerce") * 1e3
                                     ).where(device, latency)
    if "time_rounds" not in table:
        table["time_rounds"] = [[] for _ in range(len(table))]
    table["time_basis"] = ("device time, L2 " + table["l2"].astype(str)).where(table["device_ms"].notna(), "latency")
    table["peak_memory_mb"] = table["peak_memory_bytes"] / 1e6
    table["gflops"] = table["flops"] / 1e9
    impl = table.get("implementation_resolved", table["implementation"]).fillna(table["implementation"])
    series = table["layer"].where(table["implementation"] == "keras", table["layer"] + "/" + table["implementation"])
    auto = table["implementation"] == "auto"
    series = series.where(~auto, series + " (" + impl.astype(str) + ")")
    table["series"] = series
    if "backend" in table and table["backend"].nunique() > 1:
        table["series"] = table["series"] + " · " + table["backend"]
    if table["tf32"].nunique() > 1:
        table["series"] = table["series"].where(~table["tf32"], table["series"] + " · TF32")
    table[VARIANT] = _variants(table, runs)
    table["series"] = table["series"].where(table[VARIANT] == "", table["series"] + " · " + table[VARIANT])
    return _between_processes(table)


def _variants(table: pd.DataFrame, runs: list[dict]) -> pd.Series:
    """Per row, a name for its run where two runs time the same case in the
    same setup (two commits, two C allocators, ...), so that each run keeps its
    own series and its involution is compared with its own Conv2D; "" for the
    rows of every other run (shards of a sweep and other backends or devices
    merge as one). The name says what the run's run.json records differently
    from the others' (`bench.provenance.differences`, e.g. "commit 0123456789"
    or "C allocator glibc 2.36, its defaults"); where that is nothing, or does
    not tell two runs apart, the run directory's name (its path where two
    share a name) is added."""
    key = ["case_id", *(c for c in SETUP if c in table)]
    groups: list[set[str]] = []  # runs linked by a case they share, each group compared within itself
    for runs_of_case in table.groupby(key, dropna=False)["run_dir"].unique():
        if len(runs_of_case) > 1:
            linked = [group for group in groups if group & set(runs_of_case)]
            groups = [group for group in groups if group not in linked] + [set(runs_of_case).union(*linked)]
    overlapping = sorted(run for group in groups for run in group)
    folders = {run: Path(run).name for run in overlapping}
    if len(set(folders.values())) < len(folders):
        folders = {run: run for run in overlapping}
    metas = {meta["run_dir"]: meta for meta in runs}
    names = {}
    for group in map(sorted, groups):
        differ = provenance.differences([metas.get(run, {}) for run in group])
        labels = ["; ".join(f"{name} {value}" for name, value in facts.items()) for facts in differ]
        for run, label in zip(group, labels, strict=True):
            names[run] = (folders[run] if not label else f"{label} ({folders[run]})" if labels.count(label) > 1
                          else label)
    return table["run_dir"].map(lambda run: names.get(run, ""))


def log_medians(values) -> list[float]:
    """The logs of a row's process medians (`pass_medians_s`)."""
    return [math.log(v) for v in (values if isinstance(values, list) else []) if v and v > 0]


def _between_processes(table: pd.DataFrame) -> pd.DataFrame:
    """Each time's 95% interval from the variation between processes, where
    the run measured it: the series' spread of log medians between passes
    (`bench.intervals.process_noise`, pooled per run and series), divided by
    the case's number of passes, as a t interval around the time. The
    rounds' own interval (the row's, from one process) is kept where no case
    of the series was timed in two processes, and in `time_ms_rounds_ci_*`
    for every row. `process_sigma` is the series' spread (the standard
    deviation of log medians between processes); `time_log_var` and
    `time_log_df` carry the log time's variance and its degrees of freedom,
    for the ratios' intervals (`reports.tables`)."""
    for end in ("low", "high"):  # the rounds' own interval, kept for what the timer's stopping rule did
        table[f"{TIME}_rounds_ci_{end}"] = table[f"{TIME}_ci_{end}"]
    table["process_sigma"] = math.nan
    table["time_log_var"] = math.nan
    table["time_log_df"] = math.nan
    table["interval_basis"] = ONE_PROCESS
    ok = (table["status"] == "ok").tolist()
    keys = list(zip(table["run_dir"], table["series"], strict=True))
    logs = [log_medians(v) for v in table["pass_medians_s"]]
    noise, _ = intervals.process_noise((key, value) for key, value, good in zip(keys, logs, ok, strict=True) if good)
    if not noise:
        return table
    columns = [f"{TIME}_ci_low", f"{TIME}_ci_high", "process_sigma", "time_log_var", "time_log_df", "interval_basis"]
    values = {column: table[column].tolist() for column in columns}
    for position, (key, value, good, time) in enumerate(zip(keys, logs, ok, table[TIME], strict=True)):
        spread = noise.get(key)
        if not good or spread is None or not time > 0:
            continue
        variance = spread.sigma ** 2 / max(len(value), 1)
        low, high = intervals.log_interval(time, variance, spread.freedom)
        items = (low, high, spread.sigma, variance, spread.freedom, BETWEEN_PROCESSES)
        for column, item in zip(columns, items, strict=True):
            values[column][position] = item
    return table.assign(**values)
