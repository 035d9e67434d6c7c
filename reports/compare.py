"""Regressions between two runs: a per-case table of median changes.

Cases are matched by case id, backend and device name. A case is a regression
when its median grew by more than the threshold; `main` exits 1 then, so CI
can gate on it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import load

KEY = ["case_id", "backend", "device_name"]


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


def compare(base_dir: str | Path, new_dir: str | Path, threshold: float) -> pd.DataFrame:
    base = load.load_runs([base_dir]).table
    new = load.load_runs([new_dir]).table
    for name, frame, path in (("BASE_RUN", base, base_dir), ("NEW_RUN", new, new_dir)):
        if frame.empty:
            raise load.ReportError(f"{path}: {name} has no benchmark rows to compare")
    columns = [*KEY, "status", "median_s"]
    merged = base[columns].merge(new[columns], on=KEY, how="outer", suffixes=("_base", "_new"), indicator=True)
    merged["change"] = merged["median_s_new"] / merged["median_s_base"] - 1
    merged["verdict"] = "same"
    merged.loc[merged["change"] > threshold, "verdict"] = "slower"
    merged.loc[merged["change"] < -threshold, "verdict"] = "faster"
    merged.loc[merged["_merge"] == "left_only", "verdict"] = "only in base"
    merged.loc[merged["_merge"] == "right_only", "verdict"] = "only in new"
    failed = (merged["_merge"] == "both") & (merged["status_new"] != "ok") & (merged["status_base"] == "ok")
    merged.loc[failed, "verdict"] = "now fails"
    return merged.drop(columns="_merge").sort_values("change", ascending=False, na_position="last")


def plot(frame: pd.DataFrame, path: Path, threshold: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    both = frame.dropna(subset=["change"]).head(60)
    fig, ax = plt.subplots(figsize=(9, 0.22 * max(len(both), 1) + 1.5), constrained_layout=True)
    if not both.empty:
        colors = ["#c0392b" if c > threshold else "#27ae60" if c < -threshold else "#95a5a6" for c in both["change"]]
        sns.barplot(x=100 * both["change"], y=both["case_id"], hue=both["case_id"], palette=colors, legend=False,
                    ax=ax)
    ax.axvline(100 * threshold, ls=":", color="0.3")
    ax.axvline(-100 * threshold, ls=":", color="0.3")
    ax.set(xlabel="median change (%)", ylabel="", title="New run against base run")
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
