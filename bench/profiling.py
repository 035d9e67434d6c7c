"""Profiler traces of selected cases (`--profile[=EXPR]`).

After a case's timed rounds (so its numbers are untouched), a few steps (at
least 5 and about 50 ms) run under the backend's profiler:

- TensorFlow (`tf.profiler`) and JAX (`jax.profiler`) write TensorBoard's
  layout, one session per case named after its id:
  `<run-dir>/traces/plugins/profile/<case id>/<host>.xplane.pb`; open with
  `tensorboard --logdir <run-dir>/traces`. Their captures add one op-by-op
  step after the timed-like ones, inside a range named OP_BY_OP: the layer's
  stage ranges (`layers.involution.stage`) then appear as events named
  `kernel_generation` and `aggregation`. Without it a trace would not name
  them: XLA's CPU events carry no framework names, and TensorBoard's
  streaming trace viewer names TensorFlow's graph op events by their type
  only (the full names, with the stage, appear only for the few events its
  visibility filter picks, which made the stages come and go from one
  capture to the next). xprof's op statistics count that step's ops with the
  others: one of `profile_steps + 1` occurrences of each op.
- PyTorch (`torch.profiler`) writes `<run-dir>/traces/torch/<case id>/trace.json`
  (Chrome/Perfetto format; TensorBoard's profile plugin cannot read it).

The top operations by self time are extracted into the case's row.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections import defaultdict

from layers.involution import FUSED_STAGE
from layers.involution import STAGES as LAYER_STAGES

STEPS = 5
ATTEMPTS = 3
TOP = 15
OP_BY_OP = "op-by-op step (names the layer's stages)"
STAGES = (*LAYER_STAGES, FUSED_STAGE)  # every range the layer may open


def capture(session, case, step) -> dict:
    backend = session.runner.name
    traces = session.run_dir.traces
    op_by_op = backend == "tensorflow" or (backend == "jax" and case.jit)
    if op_by_op:
        step.sync(step.eager())  # compile or trace every op outside the trace
    steps = max(STEPS, min(50, int(0.05 / max(_step_seconds(step), 1e-6))))
    attempts = 0
    while attempts < ATTEMPTS:
        attempts += 1
        scratch = traces / f".capture-{case.id}"
        shutil.rmtree(scratch, ignore_errors=True)
        with session.runner.trace(str(scratch)):
            for _ in range(steps):
                step.round()
            if op_by_op:
                with session.runner.annotation(OP_BY_OP):
                    step.sync(step.eager())
        target, ops, source = _collect(backend, traces, scratch, case.id)
        # TensorFlow's host tracer now and then records a session without
        # any op-level event (executor events only): capture it again.
        if backend != "tensorflow" or source.startswith("xprof framework_op_stats"):
            break
    return {"trace_dir": str(target), "top_ops": ops, "top_ops_source": source, "profile_steps": steps,
            "profile_attempts": attempts}


def _step_seconds(step) -> float:
    import time

    start = time.perf_counter()
    step.round()
    return time.perf_counter() - start


def _collect(backend: str, traces, scratch, case_id: str):
    if backend == "torch":
        target = traces / "torch" / case_id
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch), target)
        with open(target / "ops.json") as f:
            ops = sorted(json.load(f), key=lambda r: -r["self_time_us"])[:TOP]
        return target, ops, "torch.profiler key_averages (self time; device time on CUDA)"
    sessions = sorted(glob.glob(str(scratch / "plugins" / "profile" / "*")))
    if not sessions:
        raise RuntimeError(f"the profiler wrote no session under {scratch}")
    target = traces / "plugins" / "profile" / case_id
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(sessions[-1], target)
    shutil.rmtree(scratch, ignore_errors=True)
    ops, source = top_operations(str(target))
    return target, ops, source


def _table_rows(data: bytes) -> list[dict]:
    tables = json.loads(data)
    table = tables[0] if isinstance(tables, list) else tables
    columns = [c["id"] for c in table.get("cols", [])]
    return [{c: cell.get("v") if isinstance(cell, dict) else None for c, cell in zip(columns, row["c"], strict=False)}
            for row in table.get("rows", [])]


def top_operations(session_dir: str, top: int = TOP) -> tuple[list[dict], str]:
    """Top operations of an xplane session by self time: xprof's framework
    op statistics where it has them, else trace events summed by name."""
    from xprof.convert import raw_to_tool_data

    files = sorted(glob.glob(os.path.join(session_dir, "*.xplane.pb")))
    if not files:
        return [], "no .xplane.pb"
    data, _ = raw_to_tool_data.xspace_to_tool_data(files, "framework_op_stats", {})
    rows = [r for r in _table_rows(data) if r.get("type") not in (None, "IDLE") and r.get("total_self_time")]
    if rows:
        ops = [{"operation": r["operation"], "type": r["type"], "where": r.get("host_or_device", ""),
                "occurrences": int(r.get("occurrences") or 0), "self_time_us": float(r["total_self_time"])}
               for r in rows]
        # XLA clusters inside a TensorFlow graph (jit_compile) are missing from
        # the framework op statistics: take them from the trace events.
        trace, _ = raw_to_tool_data.xspace_to_tool_data(files, "trace_viewer@", {})
        events = json.loads(trace).get("traceEvents", [])
        clusters = _xla_cluster_ops(events)
        ops = sorted(ops + clusters, key=lambda r: -r["self_time_us"])[:top] + _stage_rows(events)
        source = "xprof framework_op_stats (self time)"
        if clusters:
            source += "; XLA clusters and their ops from trace events (total time)"
        return ops, source + "; the stages of one op-by-op step from its ranges"
    data, _ = raw_to_tool_data.xspace_to_tool_data(files, "trace_viewer@", {})
    return _from_events(json.loads(data).get("traceEvents", []), top)


XLA_CLUSTER = "CpuExecutable::ExecuteAsyncOnStream"


def _stage_rows(events: list[dict]) -> list[dict]:
    """The layer's stage ranges (in the op-by-op step), summed by name."""
    stages: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.get("ph") == "X" and event.get("name") in STAGES:
            stages[event["name"]][0] += float(event.get("dur", 0.0))
            stages[event["name"]][1] += 1
    return [{"operation": name, "type": "stage", "where": "op-by-op step", "occurrences": count,
             "self_time_us": total} for name, (total, count) in stages.items()]


def _xla_cluster_ops(events: list[dict]) -> list[dict]:
    """The XLA-compiled clusters of a TensorFlow graph: each cluster run (the
    executable's range) and the compiled ops inside it on the same thread."""
    windows = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") == XLA_CLUSTER:
            windows[(e.get("pid"), e.get("tid"))].append((e["ts"], e["ts"] + e.get("dur", 0)))
    if not windows:
        return []
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        spans = windows.get((e.get("pid"), e.get("tid")))
        name = e.get("name", "")
        if e.get("ph") != "X" or not spans or name.startswith(("end: ", "ThreadpoolListener")):
            continue
        if name == XLA_CLUSTER:
            key = ("XLA cluster run", "XLA cluster")
        elif any(start <= e.get("ts", 0) and e.get("ts", 0) + e.get("dur", 0) <= end for start, end in spans):
            key = (name, "XLA op")
        else:
            continue
        totals[key][0] += float(e.get("dur", 0.0))
        totals[key][1] += 1
    return [{"operation": name, "type": kind, "where": "Host", "occurrences": count, "self_time_us": total}
            for (name, kind), (total, count) in totals.items()]


def _from_events(events: list[dict], top: int) -> tuple[list[dict], str]:
    """Compiled ops: events on the runtime's worker threads, outside the
    op-by-op step; stages: the layer's named ranges inside it."""
    threads = {(e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "") for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    windows = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in events if e.get("name") == OP_BY_OP]
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    stages: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(("$", "end: ", "ThreadpoolListener", "ThunkExecutor")):
            continue
        inside = any(start <= event.get("ts", 0) <= end for start, end in windows)
        if inside and name in STAGES:
            stages[name][0] += float(event.get("dur", 0.0))
            stages[name][1] += 1
        elif not inside and threads.get((event.get("pid"), event.get("tid"))) != "python" and name != OP_BY_OP:
            totals[name][0] += float(event.get("dur", 0.0))
            totals[name][1] += 1
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    rows = [{"operation": name, "type": "compiled op", "where": "host", "occurrences": count, "self_time_us": total}
            for name, (total, count) in ranked]
    rows += [{"operation": name, "type": "stage", "where": "op-by-op step", "occurrences": count,
              "self_time_us": total} for name, (total, count) in stages.items()]
    return rows, "xprof trace viewer events: compiled ops by total time, and the stages of one op-by-op step"
