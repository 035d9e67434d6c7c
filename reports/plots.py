"""Plots: each a short function of the tidy table; None when it has no data."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports import tables  # noqa: E402
from reports.load import TIME  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
LABELS = {"kernel_size": "kernel size K", "stride": "stride", "groups": "groups G", "reduction_ratio":
          "reduction ratio r", "resolution": "resolution (px)", "channels": "channels C", "batch": "batch",
          "dtype": "dtype", "mode": "mode", "jit": "compilation (jit)"}


def _figure(width=7.5, height=4.2):
    return plt.subplots(figsize=(width, height), constrained_layout=True)


def _legend_outside(ax, **kwargs):
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title=None, frameon=False, **kwargs)


def _series_order(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["series"].unique(), key=lambda s: (not s.startswith("involution"), s))


def time_basis(frame: pd.DataFrame) -> str:
    """What the times are: device time on GPUs, latency elsewhere."""
    bases = sorted(frame["time_basis"].dropna().unique()) if "time_basis" in frame else []
    return " / ".join(bases) or "latency"


def time_vs_axis(table: pd.DataFrame, axis: str):
    frame = tables.axis_slice(table, axis)
    if frame.empty:
        return None
    frame = tables.with_time_interval(frame)
    fig, ax = _figure(10, 4.2)
    # pandas counts booleans (jit) as numbers: they are two categories here.
    numeric = pd.api.types.is_numeric_dtype(frame[axis]) and not pd.api.types.is_bool_dtype(frame[axis])
    plot = sns.lineplot if numeric else sns.pointplot
    order = _series_order(frame)
    plot(data=frame, x=axis, y=TIME, hue="series", hue_order=order, marker="o", ax=ax,
         **({"errorbar": None} if numeric else {"errorbar": None, "linestyle": "none", "dodge": 0.3}))
    if numeric:  # each point's 95% interval of the median
        colors = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
        for series, part in frame.groupby("series"):
            part = part.dropna(subset=[f"{TIME}_ci_low", f"{TIME}_ci_high"]).sort_values(axis)
            if not part.empty:
                ax.errorbar(part[axis], part[TIME], yerr=[(part[TIME] - part[f"{TIME}_ci_low"]).clip(lower=0),
                                                          (part[f"{TIME}_ci_high"] - part[TIME]).clip(lower=0)],
                            fmt="none", ecolor=colors.get(series), elinewidth=1, capsize=2)
    ax.set(yscale="log", xlabel=LABELS.get(axis, axis), ylabel="median time (ms, log)",
           title=f"Time against {LABELS.get(axis, axis)} ({time_basis(frame)}; bars: 95% intervals)")
    if numeric:
        ax.set_xticks(sorted(frame[axis].unique()))
    _legend_outside(ax)
    return fig


def memory_vs_resolution(table: pd.DataFrame):
    frame = tables.axis_slice(table, "resolution")
    if frame.empty or frame["peak_memory_mb"].isna().all():
        return None
    fig, ax = _figure(10, 4.2)
    sns.lineplot(data=frame, x="resolution", y="peak_memory_mb", hue="series", hue_order=_series_order(frame),
                 marker="o", errorbar=None, ax=ax)
    # How it was measured goes under the figure (`tables.memory_methods`): a sentence, too long for an axis.
    ax.set(yscale="log", xlabel="resolution (px)", ylabel="peak memory (MB, log)",
           title="Peak memory during one step against resolution")
    ax.set_xticks(sorted(frame["resolution"].unique()))
    _legend_outside(ax)
    return fig


def flops_params_vs_kernel(table: pd.DataFrame):
    frame = tables.axis_slice(table, "kernel_size")
    if frame.empty:
        return None
    frame = frame.drop_duplicates(subset=["layer", "kernel_size"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    sns.lineplot(data=frame, x="kernel_size", y="gflops", hue="layer", marker="o", ax=left)
    sns.lineplot(data=frame, x="kernel_size", y="params", hue="layer", marker="o", ax=right)
    left.set(yscale="log", xlabel="kernel size K", ylabel="GFLOPs per step (analytic)", title="FLOPs")
    right.set(yscale="log", xlabel="kernel size K", ylabel="parameters", title="Parameters")
    for ax in (left, right):
        ax.set_xticks(sorted(frame["kernel_size"].unique()))
        ax.legend(fontsize="small", title=None)
    return fig


def time_ratio_heatmap(table: pd.DataFrame):
    """The best involution's time over Conv2D's, over kernel size x groups."""
    pairs = tables.matched(table)
    if pairs.empty or pairs["kernel_size"].nunique() < 2 or pairs["groups"].nunique() < 2:
        return None
    context = {a: tables._modal(pairs[a]) for a in ("stride", "reduction_ratio", "resolution", "channels",
                                                     "batch", "dtype", "mode", "jit", *tables.SETUP)}
    keep = np.ones(len(pairs), bool)
    for a, value in context.items():
        keep &= (pairs[a] == value).to_numpy()
    frame = pairs[keep]
    if frame["kernel_size"].nunique() < 2 or frame["groups"].nunique() < 2:
        return None
    best = frame.loc[frame.groupby(["groups", "kernel_size"])["time_vs_conv2d"].idxmin()]
    grid = best.pivot(index="groups", columns="kernel_size", values="time_vs_conv2d")
    unsure = best.assign(unsure=~((best["time_vs_conv2d_high"] < 1) | (best["time_vs_conv2d_low"] > 1))).pivot(
        index="groups", columns="kernel_size", values="unsure")
    labels = grid.round(2).astype(str) + unsure.map(lambda u: " ?" if u is True else "")
    log_grid = np.log2(grid)
    # Limits symmetric about 0 (a ratio of 1) rather than seaborn's `center=0`, whose re-centred colour
    # map calls a function Matplotlib 3.11 deprecates: the same colours, without the warning. Reversed:
    # blue below 1, where involution is faster.
    limit = max(float(np.nanmax(np.abs(log_grid.to_numpy()))), 1e-3)
    fig, ax = _figure(6.5, 4.4)
    sns.heatmap(log_grid, annot=labels.where(grid.notna(), ""), fmt="", cmap="RdBu_r", vmin=-limit, vmax=limit,
                ax=ax, cbar_kws={"label": "log2 time ratio, involution / Conv2D"})
    for row, groups in enumerate(grid.index):  # hatch the cells whose 95% interval includes 1
        for column, kernel in enumerate(grid.columns):
            if unsure.loc[groups, kernel] is True:
                ax.add_patch(plt.Rectangle((column, row), 1, 1, fill=False, hatch="//", edgecolor="0.4", lw=0))
    ax.set(title=f"Best involution vs Conv2D: {context['backend']}, {context['dtype']}"
                 f"{' (TF32)' if context['tf32'] else ''}, {context['mode']}\nstride {context['stride']}, "
                 f"{context['resolution']} px, C {context['channels']}, batch {context['batch']}; "
                 f"{frame['time_basis'].iloc[0]}", xlabel="kernel size K", ylabel="groups G")
    return fig


def roofline(table: pd.DataFrame):
    rows = tables.ok_layers(table)
    rows = rows[rows["bytes_min"].notna() & rows["gflops_per_s"].notna()] if not rows.empty else rows
    if rows.empty:
        return None
    rows = rows.assign(intensity=rows["flops"] / rows["bytes_min"])
    fig, ax = _figure(10, 4.8)
    sns.scatterplot(data=rows, x="intensity", y="gflops_per_s", hue="series", hue_order=_series_order(rows),
                    style="mode", ax=ax, s=40)
    peaks = rows[["peak_flops", "peak_bandwidth"]].dropna() if "peak_flops" in rows else pd.DataFrame()
    if not peaks.empty:
        flops, bandwidth = peaks.iloc[0]
        x = np.logspace(np.log10(rows["intensity"].min() / 2), np.log10(rows["intensity"].max() * 2), 100)
        ax.plot(x, np.minimum(flops, bandwidth * x) / 1e9, color="0.2", lw=1.5, label="device roof (datasheet)")
        title = "Roofline (ceilings from the device datasheet)"
    else:
        title = "Achieved rate against arithmetic intensity (no known ceilings for this device)"
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte of bytes_min)",
           ylabel="achieved GFLOP/s", title=title)
    _legend_outside(ax)
    return fig


def rounds_spread(table: pd.DataFrame, rounds: pd.DataFrame, limit: int = 40):
    if rounds.empty or table.empty:
        return None
    if "kind" in rounds:
        rounds = rounds[rounds["kind"] == "latency"]
    frame = rounds.merge(table[["case_id", "run_dir", "median_s"]], on=["case_id", "run_dir"])
    frame = frame[frame["median_s"] > 0]
    if frame.empty:
        return None
    frame = frame.assign(relative=frame["seconds"] / frame["median_s"])
    spread = frame.groupby("case_id")["relative"].agg(lambda s: s.quantile(0.9) / s.quantile(0.1))
    chosen = spread.sort_values(ascending=False).index[:limit]
    frame = frame[frame["case_id"].isin(chosen)]
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(chosen) + 1.6), constrained_layout=True)
    with warnings.catch_warnings():  # seaborn 0.13.2 passes `vert`, which Matplotlib 3.11 deprecates: not ours to fix
        warnings.filterwarnings("ignore", message="vert: bool was deprecated",
                                category=matplotlib.MatplotlibDeprecationWarning)
        sns.boxplot(data=frame, y="case_id", x="relative", order=list(chosen), ax=ax, fliersize=2, color="#9ecae1")
    ax.set(xscale="log", xlabel="round time / case median (log)", ylabel="",
           title=f"Spread of repeated rounds ({len(chosen)} widest of {spread.size} cases)")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def model_latency(table: pd.DataFrame):
    rows = tables.ok_rows(table, "model")
    if rows.empty:
        return None
    fig, ax = _figure(7.5, 0.35 * rows["case_id"].nunique() + 1.8)
    sns.barplot(data=rows, y="series", x=TIME, hue="mode", ax=ax, errorbar=None)
    ax.set(xscale="log", xlabel="median step time (ms, log)", ylabel="", title=f"Whole networks ({time_basis(rows)})")
    return fig


EXAMPLE_VAL_ACCURACY = {"seed_conv": 0.7304, "seed_involution": 0.4719}


def training_curves(histories: pd.DataFrame | None):
    if histories is None or histories.empty:
        return None
    frame = histories.melt(id_vars=["model", "epoch"], value_vars=["loss", "val_loss", "accuracy", "val_accuracy"],
                           var_name="metric")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, kind in zip(axes, ("loss", "accuracy"), strict=True):
        part = frame[frame["metric"].str.endswith(kind)]
        sns.lineplot(data=part, x="epoch", y="value", hue="model", style="metric", marker="o", ax=ax)
        ax.set(title=kind.capitalize(), ylabel=kind)
        if kind == "accuracy":
            for model, value in EXAMPLE_VAL_ACCURACY.items():
                ax.axhline(value, ls=":", lw=1, color="0.3")
                ax.annotate(f"the example's final val_accuracy on CIFAR-10, {model}: {value}", (0, value),
                            fontsize="x-small", xytext=(2, 2), textcoords="offset points", color="0.3")
        ax.legend(fontsize="x-small", title=None)
    return fig
