"""Changes between two runs that know the noise: `python -m reports compare`.

Cases are matched by case id and setup (backend, device, float32 precision
policy, L2 mode), on the time the reports compare (device time where
measured, else latency). Two kinds of evidence decide a verdict:

- **within the runs**: every stored round of the case in each run; the
  Brunner-Munzel p-value that one run's rounds tend to be larger
  (`bench.intervals.rank_test`) and the 95% bootstrap interval of the ratio of
  the medians (`bench.intervals.ratio_interval`);
- **between processes**: rounds within one process do not show how much a
  case's median moves from one process to the next (on the project's CPU
  machine, two back-to-back runs of one commit moved medians by 13%, median over
  the cases, and up to 55%, while each run's intervals were a few percent wide:
  docs/PERF.md). So a run can time each case in several processes (`passes`),
  and runs of the base code can be added with `--history`. Each process gives
  one median; their spread on a log scale, pooled over the cases of a series
  (layer and implementation), is the noise `sigma`; the change's 99% interval
  is exp(d -+ 2.576 sigma sqrt(1/n_new + 1/n_base)), d the difference of the
  mean log medians.

Verdicts, with `--threshold` the smallest change that matters (the margin):
`slower` when p < 0.01 and the between-process interval lies above
1 + threshold; `faster` when p < 0.01 and it lies below 1 / (1 + threshold);
`same` when it lies within the margin (without a between-process noise: when
the within-run interval does); `uncertain` otherwise — in particular when
neither run has two passes and no `--history` is given and the change is
larger than the threshold: the runs alone cannot tell a change from the
machine's drift. `now fails` / `fixed` / `only in base` / `only in new` for
cases whose status or presence changed. The command exits 1 for `slower` and
`now fails` only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench import intervals, provenance
from bench.rundir import SETUP
from reports import load
from reports.load import TIME

KEY = ["case_id", *SETUP]
ALPHA = 0.01
Z99 = 2.576  # two-sided 99% normal quantile
VERDICTS = ("slower", "now fails", "faster", "fixed", "same", "uncertain", "only in base", "only in new")


def parse_threshold(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise load.ReportError(f"--threshold takes a percentage such as 5% or a fraction such as 0.05. "
                               f"Received: --threshold={text}") from None
    if value < 0:
        raise load.ReportError(f"--threshold must not be negative. Received: --threshold={text}")
    return value


def _cases(loaded: load.Loaded) -> pd.DataFrame:
    table = loaded.table
    columns = [*KEY, "series", "status", TIME, "time_rounds", "pass_medians_s"]
    return table[[c for c in columns if c in table]].drop_duplicates(subset=KEY, keep="last")


def _verdict(within: tuple[float, float, float], p: float, between: tuple[float, float] | None,
             margin: float) -> tuple[str, str]:
    ratio, low, high = within
    upper, lower = 1 + margin, 1 / (1 + margin)
    significant = math.isfinite(p) and p < ALPHA
    if between is None:
        if all(math.isfinite(v) for v in (low, high)) and lower <= low and high <= upper:
            return "same", f"within-run interval within ±{margin:.0%} (no between-process noise measured)"
        return "uncertain", ("no between-process noise: neither run has two passes and no --history was given, "
                             "so a change this size may be the machine's drift")
    b_low, b_high = between
    if significant and b_low > upper:
        return "slower", f"p = {p:.2g}; between-process interval above +{margin:.0%}"
    if significant and b_high < lower:
        return "faster", f"p = {p:.2g}; between-process interval below -{1 - lower:.0%}"
    if lower <= b_low and b_high <= upper:
        return "same", f"between-process interval within ±{margin:.0%}"
    return "uncertain", f"between-process interval {b_low:.3g}–{b_high:.3g} crosses the margin ±{margin:.0%}"


def compare(base_dir: str | Path, new_dir: str | Path, threshold: float,
            history: list[str | Path] = ()) -> tuple[pd.DataFrame, dict]:
    """Per-case changes, and what the comparison rests on (commits, machines, noise)."""
    base_run = load.load_runs([base_dir])
    new_run = load.load_runs([new_dir])
    for name, loaded, path in (("BASE_RUN", base_run, base_dir), ("NEW_RUN", new_run, new_dir)):
        if loaded.table.empty:
            raise load.ReportError(f"{path}: {name} has no benchmark rows to compare")
    base, new = _cases(base_run), _cases(new_run)
    # The base code's process medians: BASE_RUN's passes and every --history run's.
    earlier = [_cases(load.load_runs([run])) for run in history]
    base_logs: dict[tuple, list[float]] = {}
    for frame in [base, *earlier]:
        for _, row in frame[frame["status"] == "ok"].iterrows():
            base_logs.setdefault(tuple(row[k] for k in KEY), []).extend(load.log_medians(row.get("pass_medians_s")))
    groups = [(row["series"], base_logs.get(tuple(row[k] for k in KEY), [])) for _, row in base.iterrows()]
    groups += [(row["series"], load.log_medians(row.get("pass_medians_s")))
               for _, row in new[new["status"] == "ok"].iterrows()]
    noise, everything = intervals.process_noise(groups)
    per_series = {series: n.sigma for series, n in noise.items()}
    overall = everything.sigma if everything else None

    merged = base.merge(new, on=KEY, how="outer", suffixes=("_base", "_new"), indicator=True)
    rows = []
    for _, case in merged.iterrows():
        key = tuple(case[k] for k in KEY)
        series = case.get("series_base") if isinstance(case.get("series_base"), str) else case.get("series_new")
        sigma = per_series.get(series) or overall
        out = {**{k: case[k] for k in KEY}, "status_base": case.get("status_base"),
               "status_new": case.get("status_new"), "median_ms_base": case.get(f"{TIME}_base"),
               "median_ms_new": case.get(f"{TIME}_new"), "ratio": math.nan, "ratio_low": math.nan,
               "ratio_high": math.nan, "p_value": math.nan, "noise_sigma": sigma, "between_low": math.nan,
               "between_high": math.nan, "margin": threshold}
        if case["_merge"] != "both":
            out.update(verdict="only in base" if case["_merge"] == "left_only" else "only in new", reason="")
        elif case["status_base"] == "ok" and case["status_new"] != "ok":
            out.update(verdict="now fails", reason=f"status {case['status_new']}")
        elif case["status_base"] != "ok" and case["status_new"] == "ok":
            out.update(verdict="fixed", reason=f"was {case['status_base']}")
        elif case["status_base"] != "ok":
            out.update(verdict="uncertain", reason="fails in both runs")
        else:
            new_rounds, base_rounds = case["time_rounds_new"], case["time_rounds_base"]
            # The ratio of the stored rounds' medians: the data the interval and the test use.
            ratio = (float(np.median(new_rounds) / np.median(base_rounds)) if len(new_rounds) and len(base_rounds)
                     else case[f"{TIME}_new"] / case[f"{TIME}_base"])
            low, high = intervals.ratio_interval(new_rounds, base_rounds)
            p = intervals.rank_test(new_rounds, base_rounds)
            new_logs, old_logs = load.log_medians(case.get("pass_medians_s_new")), base_logs.get(key, [])
            between = None
            if sigma is not None and new_logs and old_logs:
                d = float(np.mean(new_logs) - np.mean(old_logs))
                half = Z99 * sigma * math.sqrt(1 / len(new_logs) + 1 / len(old_logs))
                between = (math.exp(d - half), math.exp(d + half))
                out.update(between_low=between[0], between_high=between[1])
            verdict, reason = _verdict((ratio, low, high), p, between, threshold)
            out.update(ratio=ratio, ratio_low=low, ratio_high=high, p_value=p, verdict=verdict, reason=reason)
        rows.append(out)
    frame = pd.DataFrame(rows)
    frame["change"] = frame["ratio"] - 1
    frame = frame.sort_values("ratio", ascending=False, na_position="last").reset_index(drop=True)
    passes = {int(len(v)) for v in base.get("pass_medians_s", pd.Series(dtype=object)) if isinstance(v, list)}
    context = _context(base_run, new_run, len(history), overall)
    context["base_passes"] = max(passes) if passes else 0
    return frame, context


def _context(base: load.Loaded, new: load.Loaded, history: int, overall: float | None) -> dict:
    def meta(loaded: load.Loaded) -> dict:
        return loaded.runs[0] if loaded.runs else {}

    b, n = meta(base), meta(new)
    warnings = []
    if provenance.machine_key(b) != provenance.machine_key(n):
        warnings.append("the two runs were measured on different machines "
                        f"({provenance.machine_key(b)} against {provenance.machine_key(n)}): a change may be the "
                        "machine's, not the code's")
    differ = provenance.differences([b, n])  # the commits have a line of their own
    changed = [f"{name}: {differ[0][name]} -> {differ[1][name]}" for name in differ[0] if name != "commit"]
    if changed:
        warnings.append(f"the two runs ran with different settings ({'; '.join(changed)}): a change may be the "
                        "setting's, not the code's")
    for name, m in (("base", b), ("new", n)):
        if m.get("git_dirty"):
            warnings.append(f"the {name} run's checkout had uncommitted changes")
    return {"base_commit": provenance.short(b.get("git_commit")), "new_commit": provenance.short(n.get("git_commit")),
            "history_runs": history, "noise_sigma": overall, "warnings": warnings}


def plot(frame: pd.DataFrame, path: Path, threshold: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = frame.dropna(subset=["ratio"]).head(60)
    fig, ax = plt.subplots(figsize=(9, 0.24 * max(len(both), 1) + 1.6), constrained_layout=True)
    colors = {"slower": "#c0392b", "faster": "#27ae60", "same": "#95a5a6", "uncertain": "#f0ad4e"}
    for y, (_, row) in enumerate(both.iterrows()):
        change = 100 * (row["ratio"] - 1)
        ax.barh(y, change, color=colors.get(row["verdict"], "#95a5a6"))
        low, high = ((row["between_low"], row["between_high"]) if math.isfinite(row["between_low"])
                     else (row["ratio_low"], row["ratio_high"]))
        if math.isfinite(low):
            ax.errorbar(change, y, xerr=[[max(change - 100 * (low - 1), 0)], [max(100 * (high - 1) - change, 0)]],
                        fmt="none", ecolor="0.2", capsize=2, lw=1)
    ax.set_yticks(range(len(both)), both["case_id"], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(100 * threshold, ls=":", color="0.3")
    ax.axvline(-100 * threshold, ls=":", color="0.3")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), fontsize="small", loc="lower right")
    ax.set(xlabel="median change (%), with the between-process 99% interval (else the within-run 95%)", ylabel="",
           title="New run against base run")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
