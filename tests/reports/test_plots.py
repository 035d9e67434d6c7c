"""Each plot of the report (`reports.plots`) drawn from the fixture runs:
what it shows, its intervals and marks, and None where the table has nothing
for it (the report then leaves the figure out)."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from reports import load, plots


@pytest.fixture(scope="module")
def base():
    from tests.reports.conftest import FIXTURES

    return load.load_runs([FIXTURES / "run_base"])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_time_against_an_axis_has_every_series_and_its_intervals(base):
    ax = plots.time_vs_axis(base.table, "kernel_size").axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["involution/reference", "involution/shiftsum", "conv2d", "depthwise"]  # involution first
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 4  # each series' 95% intervals
    assert ax.get_yscale() == "log" and "latency" in ax.get_title()
    assert [tick for tick in ax.get_xticks()] == [3, 5, 7]


def test_an_axis_without_two_values_has_no_plot(base):
    assert plots.time_vs_axis(base.table, "resolution") is None
    assert plots.memory_vs_resolution(base.table) is None


def test_heat_map_cells_are_the_best_involutions_time_over_conv2ds(base):
    ax = plots.time_ratio_heatmap(base.table).axes[0]
    # The best involution's time over Conv2D's (fixtures/make_fixtures.py): K3 G4 4/6, K5 G4 12/13,
    # K7 G4 35/25, K7 G1 30/25; K3 and K5 were not run with one group
    assert sorted(text.get_text() for text in ax.texts) == sorted(["0.67", "0.92", "1.4", "1.2"])
    assert "tensorflow, float32, inference" in ax.get_title()
    # colours symmetric about a ratio of 1: the widest log2 ratio, log2(1.5), either side of 0
    assert ax.collections[0].get_clim() == pytest.approx((-np.log2(1.5), np.log2(1.5)))


def test_plots_raise_no_deprecation_from_seaborn_on_new_matplotlib(base):
    # seaborn 0.13.2's `center=` heat map and its box plot call what Matplotlib 3.11 deprecates
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plots.time_ratio_heatmap(base.table)
        plots.rounds_spread(base.table, base.rounds, limit=5)
    assert not [str(w.message) for w in seen if "set_bad" in str(w.message) or "vert:" in str(w.message)]


def test_roofline_draws_the_datasheet_roof_only_for_a_known_device(base, fixtures):
    cpu = plots.roofline(base.table).axes[0]
    assert "no known ceilings" in cpu.get_title()
    assert not [line for line in cpu.lines if line.get_label() == "device roof (datasheet)"]
    gpu = plots.roofline(load.load_runs([fixtures / "run_gpu"]).table).axes[0]
    assert gpu.get_title() == "Roofline (ceilings from the device datasheet)"
    roof = next(line for line in gpu.lines if line.get_label() == "device roof (datasheet)")
    x = np.asarray(roof.get_xdata())  # the H100 SXM's float32 datasheet figures: 67 TFLOP/s, 3.35 TB/s
    assert np.asarray(roof.get_ydata()) == pytest.approx(np.minimum(67e12, 3.35e12 * x) / 1e9)


def test_rounds_spread_shows_the_widest_cases_first(base):
    ax = plots.rounds_spread(base.table, base.rounds, limit=5).axes[0]
    assert len(ax.get_yticklabels()) == 5 and "5 widest of 18 cases" in ax.get_title()


def test_training_curves_mark_the_examples_own_figures(fixtures):
    seed = load.load_runs([fixtures / "run_seed"])
    accuracy = plots.training_curves(seed.histories).axes[1]
    assert {line.get_ydata()[0] for line in accuracy.lines if list(line.get_xdata()) == [0, 1]} \
        >= set(plots.EXAMPLE_VAL_ACCURACY.values())
    assert any("0.7304" in text.get_text() for text in accuracy.texts)


def test_nothing_to_draw_is_none(base):
    assert plots.training_curves(None) is None
    assert plots.model_latency(base.table) is None  # no whole-network rows
    assert plots.rounds_spread(base.table, base.rounds.iloc[:0]) is None


TENSORFLOW_CPU_SOURCE = ("the larger of TensorFlow's CPU allocator peak (tf.config.experimental.get_memory_info: "
                         "{:,} B) and memray (allocations during one step: {:,} B)")


@pytest.fixture(scope="module")
def resolutions(base):
    """The base run's rows at 16, 32 and 56 px, their memory measured as on
    TensorFlow's CPU, whose source quotes each row's two readings."""
    import pandas as pd

    rows = [base.table.assign(resolution=px, peak_memory_mb=base.table["peak_memory_mb"] * px / 32,
                              peak_memory_source=TENSORFLOW_CPU_SOURCE.format(px * 123_456, px * 789))
            for px in (16, 32, 56)]
    return pd.concat(rows, ignore_index=True)


def _texts(fig) -> list:
    from matplotlib.text import Text

    return [text for text in fig.findobj(Text) if text.get_visible() and text.get_text()]


def _texts_outside(fig) -> list[str]:
    """The titles, labels, legends and notes a figure draws (partly) outside
    itself: cut off in the report. (Tick labels are left out: Matplotlib keeps
    some beyond the axes' limits, undrawn, and the layout places the rest.)"""
    fig.canvas.draw()
    page = fig.bbox
    ticks = {id(label) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for label in axis.get_ticklabels(which="both")}
    return [text.get_text() for text in _texts(fig) if id(text) not in ticks
            and ((box := text.get_window_extent()).x0 < page.x0 - 1 or box.y0 < page.y0 - 1
                 or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1)]


def test_memory_against_resolution_leaves_how_it_was_measured_to_the_caption(resolutions):
    ax = plots.memory_vs_resolution(resolutions).axes[0]
    assert ax.get_xlabel() == "resolution (px)" and [tick for tick in ax.get_xticks()] == [16, 32, 56]
    assert not [text.get_text() for text in _texts(ax.figure) if "memray" in text.get_text()]


def test_every_plot_keeps_its_text_inside_the_figure(base, resolutions, fixtures):
    seed = load.load_runs([fixtures / "run_seed"])
    gpu = load.load_runs([fixtures / "run_gpu"]).table
    figures = {"time": plots.time_vs_axis(base.table, "kernel_size"), "memory": plots.memory_vs_resolution(resolutions),
               "flops": plots.flops_params_vs_kernel(base.table), "heat map": plots.time_ratio_heatmap(base.table),
               "roofline": plots.roofline(gpu), "rounds": plots.rounds_spread(base.table, base.rounds),
               "training": plots.training_curves(seed.histories)}
    assert {name: _texts_outside(fig) for name, fig in figures.items()} == {name: [] for name in figures}
