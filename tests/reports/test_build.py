"""report.html: self-contained, every plot embedded, the tables there;
results.csv beside it; the command line's exit codes; scale."""

from __future__ import annotations

import base64
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from reports import build
from tests.reports.conftest import cli, copy_run


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.sections, self.links = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table" and "sortable" in attrs.get("class", ""):
            self.tables += 1
        if tag == "section":
            self.sections.append(attrs.get("id"))
        for key in ("src", "href"):
            if attrs.get(key):
                self.links.append(attrs[key])


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def test_report_of_a_run(fixtures, tmp_path):
    out = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    page = _parse(out)
    assert page.sections == ["environment", "summary", "axes", "costs", "scaling", "roofline", "spread", "profiles",
                             "results"]
    assert len(page.images) == 7  # kernel size, stride, groups; FLOPs+params; heat map; roofline; spread
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.tables >= 8
    assert not [link for link in page.links if link.startswith(("http:", "https:", "//"))]
    text = out.read_text()
    assert "Fixture CPU" in text and "full FP32 (TF32 off)" in text and "involution/aggregation/Mul" in text
    assert "2026-11-22 12:00:00 UTC" in text  # the run's start, readable
    assert "What each run cost, per session" in text
    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == 18 and {"case_id", "latency_ms", "series"} <= set(csv.columns)


def test_report_of_a_gpu_run_compares_device_times_and_lists_throttled_cases(fixtures, tmp_path):
    out = build.build_report([fixtures / "run_gpu"], output=tmp_path / "report.html")
    page = _parse(out)
    assert "conditions" in page.sections
    text = out.read_text()
    assert "CUDA events around each step (fixture)" in text and "NVML (fixture)" in text
    assert "INVOLUTION_UNROLL_WINDOW=0 INVOLUTION_TILE_WIDTH=8" in text  # how its fused kernels were built
    assert "device time, L2 cold" in text
    # the throttled case is listed with its reason in the conditions section
    conditions = text[text.index('id="conditions"'):text.index('id="results"')]
    assert "involution-reference-k7s1g4r4-32px-c64-b8-f32-inf-nojit" in conditions
    assert "software power cap" in conditions
    csv = pd.read_csv(tmp_path / "results.csv")
    row = csv.set_index("case_id").loc["conv2d-keras-k7s1-32px-c64-b8-f32-inf-nojit"]
    assert row["device_ms"] == pytest.approx(20.0) and row["latency_ms"] == pytest.approx(25.0)
    assert row["time_ms"] == pytest.approx(20.0) and row["time_basis"] == "device time, L2 cold"
    assert {"gpu_sm_clock_mhz", "gpu_temperature_c", "gpu_power_w", "throttled", "throttle_reasons", "l2",
            "device_q1_s", "device_q3_s", "device_time_source"} <= set(csv.columns)
    assert int(csv["throttled"].sum()) == 1


def test_a_cpu_run_has_no_conditions_section(fixtures, tmp_path):
    out = build.build_report([fixtures / "run_base"], output=tmp_path / "report.html")
    assert "conditions" not in _parse(out).sections
    assert "device time, L2" not in out.read_text()


def test_report_of_a_training_run(fixtures, tmp_path):
    out = build.build_report([fixtures / "run_seed"], output=tmp_path / "report.html")
    page = _parse(out)
    assert "models" in page.sections
    text = out.read_text()
    assert "0.7304" in text and "0.4719" in text and "Involution kernel maps" in text
    assert len(page.images) == 2  # training curves, kernel maps


def test_cli_build(fixtures, tmp_path):
    result = cli("build", str(fixtures / "run_base"), str(fixtures / "run_new"), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "r.html")


def test_cli_build_lists_what_it_skipped(fixtures, tmp_path):
    result = cli("build", str(fixtures / "run_broken"), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 0
    assert result.stderr.count("skipped: ") == 3
    assert "Skipped 3 input line(s)" in (tmp_path / "r.html").read_text()


def test_cli_outputs_that_cannot_be_written_are_one_line(fixtures, tmp_path):
    (tmp_path / "a-file").write_text("")
    where = tmp_path / "a-file" / "r.html"
    for args in (["build", str(fixtures / "run_base"), "-o", str(where)],
                 ["compare", str(fixtures / "run_base"), str(fixtures / "run_new"), "--plot", str(where)]):
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {args[-2]} {where}: cannot be created or written"), lines


@pytest.mark.parametrize("name, message", [
    ("no_such_run", "no such run directory"),
    ("run_empty", "an empty run"),
    ("run_foreign", "no valid result rows"),
])
def test_cli_bad_input_is_one_line_and_exit_2(fixtures, tmp_path, name, message):
    result = cli("build", str(fixtures / name), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0] and message in lines[0]


def test_cli_compare_exit_codes(fixtures, tmp_path):
    slower = cli("compare", str(fixtures / "cmp_base"), str(fixtures / "cmp_new"), "--plot", str(tmp_path / "c.png"))
    assert slower.returncode == 1, slower.stderr
    assert "involution-shiftsum-k7s1g4r4-32px-c64-b8-f32-inf-nojit" in slower.stdout
    assert "1 slower, 17 same" in slower.stdout and "noise sigma" in slower.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    same = cli("compare", str(fixtures / "cmp_base"), str(fixtures / "cmp_same"), "--plot", str(tmp_path / "c.png"))
    assert same.returncode == 0 and "18 same" in same.stdout
    unknown = cli("compare", str(fixtures / "run_base"), str(fixtures / "run_new"), "--plot", str(tmp_path / "c.png"))
    assert unknown.returncode == 0 and "not measured" in unknown.stdout
    bad = cli("compare", str(fixtures / "run_base"), str(fixtures / "run_new"), "--threshold", "fast")
    assert bad.returncode == 2 and "Received: --threshold=fast" in bad.stderr


def test_ten_thousand_cases_in_under_a_minute(fixtures, tmp_path):
    template = json.loads((fixtures / "run_base" / "results.jsonl").read_text().splitlines()[0])
    run = tmp_path / "big"
    run.mkdir()
    (run / "run.json").write_text((fixtures / "run_base" / "run.json").read_text())
    with open(run / "results.jsonl", "w") as f:
        i = 0
        for layer, impls in (("involution", ("reference", "shiftsum", "xla")), ("conv2d", ("keras",)),
                             ("depthwise", ("keras",))):
            for impl in impls:
                for k in (1, 3, 5, 7, 9, 11, 13):
                    for s in (1, 2, 3, 4):
                        for g in ((1, 2, 4, 8, 16) if layer == "involution" else (0,)):
                            for res in (7, 14, 28, 56, 112, 224):
                                for batch in (1, 8, 32, 64):
                                    if i >= 10_000:
                                        break
                                    row = template | {
                                        "layer": layer, "implementation": impl, "kernel_size": k, "stride": s,
                                        "groups": g, "resolution": res, "batch": batch,
                                        "median_s": 1e-4 * k * k * res / s * (3 if layer == "conv2d" else 1) + i * 1e-9,
                                        "case_id": f"{layer}-{impl}-k{k}s{s}g{g}-{res}px-b{batch}-{i}"}
                                    f.write(json.dumps(row) + "\n")
                                    i += 1
    assert i == 10_000
    start = time.perf_counter()
    out = build.build_report([run], output=tmp_path / "big.html")
    elapsed = time.perf_counter() - start
    assert elapsed < 60, elapsed
    assert "first 2000 of 10000 rows" in out.read_text()


def test_implausible_memory_is_left_out_and_counted(fixtures, tmp_path):
    """A row whose measured peak is below its own output has no peak: the
    summary weighs memory over the other pairs and says how many it left out."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text((fixtures / "run_base" / "run.json").read_text())
    rows = [json.loads(line) for line in (fixtures / "run_base" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row["case_id"].startswith("conv2d-keras-k7s1"):
            row.update(peak_memory_measured_bytes=row["peak_memory_bytes"], peak_memory_bytes=None,
                       peak_memory_valid=False, peak_memory_floor_bytes=10**9)
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = build.build_report([run], output=tmp_path / "report.html")
    text = out.read_text()
    assert "1 row(s) measured a peak smaller than their step&#39;s own output" in text
    summary = text[text.index('id="summary"'):text.index('id="axes"')]
    # 10 involution cases have a Conv2D of the same work; the 4 at K 7, stride 1 (G 1 and 4, two
    # implementations) lost their Conv2D's memory.
    assert re.search(r"<b>\d+ / 10</b><span>involution faster than Conv2D", summary)
    assert re.search(r"<b>\d+ / 6</b><span>involution lighter than Conv2D", summary)


def test_the_summary_lists_the_cases_the_run_could_not_run(fixtures, tmp_path):
    reason = "'triton' is a fused GPU kernel: without a GPU it runs in an interpreter"
    run = copy_run(fixtures / "run_base", tmp_path / "run", not_run={
        reason: ["involution-triton-k7s1g4r4-32px-c64-b8-f32-inf-nojit",
                 "involution-triton-k3s1g4r4-32px-c64-b8-f32-inf-nojit"]})
    text = build.build_report([run], output=tmp_path / "report.html").read_text()
    summary = text[text.index('id="summary"'):text.index('id="axes"')]
    assert re.search(r"<b>2</b><span>not runnable on the run&#39;s backend and device", summary)
    assert "the run&#39;s backend and device cannot run" in summary
    assert "is a fused GPU kernel: without a GPU it runs in an interpreter" in summary
    assert "involution-triton-k7s1g4r4-32px-c64-b8-f32-inf-nojit" in summary  # the first as an example
    one = int(re.search(r"<b>(\d+)</b><span>cases</span>", summary).group(1))
    # Two runs of the sweep: the table has each case once per run, the cases not runnable once each; the
    # cards say so.
    again = copy_run(run, tmp_path / "again")
    text = build.build_report([run, again], output=tmp_path / "two.html").read_text()
    summary = text[text.index('id="summary"'):text.index('id="axes"')]
    assert re.search(r"<b>2</b><span>runs</span>", summary)
    assert re.search(rf"<b>{2 * one}</b><span>cases, each once per run</span>", summary)
    assert re.search(r"<b>2</b><span>not runnable on the run&#39;s backend and device, each once", summary)
    # A run without the field (older run.json) has neither the card nor the table.
    plain = build.build_report([fixtures / "run_base"], output=tmp_path / "plain.html").read_text()
    assert "not runnable on the run" not in plain and "cannot run" not in plain


def test_the_environment_lists_the_recorded_variables(fixtures, tmp_path):
    plain = build.build_report([fixtures / "run_base"], output=tmp_path / "plain.html").read_text()
    assert "none of those that change results" in plain
    run = copy_run(fixtures / "run_base", tmp_path / "run",
                   environment={"MALLOC_TRIM_THRESHOLD_": "4000000000", "XLA_FLAGS": "--xla_cpu_ftz=true"},
                   time_per_case=1 / 3, precision_target=0.02)  # one third of a second a pass
    text = build.build_report([run], output=tmp_path / "report.html").read_text()
    assert "MALLOC_TRIM_THRESHOLD_=4000000000, XLA_FLAGS=--xla_cpu_ftz=true" in text
    assert "or 0.3333 s" in text and "0.33333" not in text  # the report's number format
    assert "C allocator" in text and "not recorded" in text  # the fixture's run.json predates the field


def test_runs_with_different_c_allocators_are_flagged(fixtures, tmp_path):
    runs = [copy_run(fixtures / "run_base", tmp_path / name, c_allocator=allocator)
            for name, allocator in (("glibc", "glibc 2.36 (libc.so.6), its defaults"),
                                    ("tcmalloc", "libtcmalloc_minimal.so.4 (/usr/lib/libtcmalloc_minimal.so.4), "
                                                 "its defaults"))]
    one = build.build_report(runs[:1], output=tmp_path / "one.html").read_text()
    assert "glibc 2.36 (libc.so.6), its defaults" in one and "different C allocators" not in one
    both = build.build_report(runs, output=tmp_path / "both.html").read_text()
    assert ("Warning: these runs&#39; processes used 2 different C allocators or settings (glibc 2.36 (libc.so.6), "
            "its defaults; libtcmalloc_minimal.so.4 (/usr/lib/libtcmalloc_minimal.so.4), its defaults)") in both
    # each run a series named by its allocator, and a note that says which run directory each name is
    assert "involution/shiftsum · C allocator libtcmalloc_minimal.so.4, its defaults" in both
    assert (f"(C allocator glibc 2.36, its defaults: {runs[0]}; C allocator libtcmalloc_minimal.so.4, its defaults: "
            f"{runs[1]})") in both
