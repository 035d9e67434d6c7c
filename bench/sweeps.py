"""Sweeps: TOML files of axes and values that expand into benchmark cases.

A sweep file has optional settings, a `[defaults]` table with a value for
every axis, and `[[grid]]` tables. Each grid overrides some axes with a value
or a list of values; its cases are the cartesian product of those lists over
the defaults. The sweep is the union of its grids' cases, deduplicated after
axes that do not apply to a layer are normalised (see `bench.cases`).

Special values: `implementation = "*"` means every implementation the layer
has on the current backend; a grid's `cpu = {axis = value, ...}` table
overrides axes when no GPU is used (smaller batches for whole networks); `jit = "default"` means how Keras' fit/predict
run on that backend by default (XLA on TensorFlow only with a GPU, jax.jit,
eager PyTorch). Built-in sweeps live in `bench/sweeps/*.toml`.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.timing import DEFAULT_PRECISION

# bench.cases and layers.registry load Keras: they are imported where the
# cases are made, so that finding a sweep file (`locate`) loads no framework.

BUILTIN_DIR = Path(__file__).parent / "sweeps"
SETTINGS = {"description": str, "time_per_case": (int, float), "min_rounds": int, "max_rounds": int,
            "precision": (int, float), "case_timeout": (int, float), "passes": int}
DEFAULT_CASE_TIMEOUT = 900.0  # seconds; no healthy case of the built-in sweeps comes near it on a CPU


class SweepError(ValueError):
    """A sweep file or name that cannot be used; the message names it."""


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    description: str
    time_per_case: float  # seconds of timed rounds a case may take at most
    min_rounds: int
    max_rounds: int
    precision: float  # stop a series when its median's 95% interval is within +-precision
    case_timeout: float  # seconds a case may run before it is stopped and recorded as timeout
    passes: int  # how many processes time each case, one pass over the sweep each (asv's "processes")
    grids: tuple[dict, ...]
    defaults: dict

    def cases(self, backend: str, device: str) -> list:
        """The sweep's cases (`bench.cases.Case`) on a backend and device kind, sorted by id."""
        from bench.cases import DEFAULT_JIT, Case

        seen: dict[str, Case] = {}
        for grid in self.grids:
            overrides = grid.get("cpu", {}) if device != "gpu" else {}
            values = {axis: overrides.get(axis, grid.get(axis, self.defaults[axis])) for axis in Case.axes()}
            lists = [v if isinstance(v, list) else [v] for v in values.values()]
            for combo in itertools.product(*lists):
                params = dict(zip(values, combo, strict=True))
                if params["jit"] == "default":
                    params["jit"] = DEFAULT_JIT[backend] if DEFAULT_JIT[backend] is not None else device == "gpu"
                for impl in _implementations(params["layer"], params["implementation"], backend):
                    case = Case(**(params | {"implementation": impl})).normalised()
                    seen.setdefault(case.id, case)
        return sorted(seen.values(), key=lambda c: c.id)


def _implementations(layer: str, value: str, backend: str) -> list[str]:
    from layers import registry

    entry = registry.get(layer)
    if value != "*":
        # A Keras baseline named with an involution implementation in a grid
        # shared with involution: it has one implementation.
        if not entry.involution and value != registry.BASELINE_IMPLEMENTATION:
            return [registry.BASELINE_IMPLEMENTATION]
        return [value]
    if entry.involution:
        from layers import aggregation

        return [name for name, impl in aggregation.IMPLEMENTATIONS.items() if backend in impl.backends]
    return [registry.BASELINE_IMPLEMENTATION]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def locate(name_or_path: str) -> Path:
    """The file of a built-in sweep name or of a TOML path (loads no framework)."""
    path = Path(name_or_path)
    if name_or_path in builtin_names():
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    elif not path.suffix == ".toml" and not path.exists():
        raise SweepError(
            f"--sweep: no built-in sweep named {name_or_path!r} and no such file; "
            f"built-in sweeps: {', '.join(builtin_names())}, or give the path of a .toml file. "
            f"Received: --sweep={name_or_path}"
        )
    if not path.is_file():
        raise SweepError(f"--sweep: file not found: {path}. Received: --sweep={name_or_path}")
    return path


def load(name_or_path: str) -> Sweep:
    """A built-in sweep by name, or a TOML file by path."""
    path = locate(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SweepError(f"{path}: not valid TOML ({error})") from None
    return parse(data, str(path), name=path.stem)


def parse(data: dict, source: str, name: str = "custom") -> Sweep:
    from bench.cases import Case

    axes = set(Case.axes())
    unknown = set(data) - set(SETTINGS) - {"defaults", "grid"}
    if unknown:
        raise SweepError(
            f"{source}: unknown key(s) {sorted(unknown)}; a sweep has {sorted(SETTINGS)}, "
            "[defaults] and [[grid]] tables"
        )
    for key, kind in SETTINGS.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise SweepError(f"{source}: {key} has the wrong type. Received: {key}={data[key]!r}")
    for key in ("time_per_case", "min_rounds", "max_rounds", "case_timeout", "passes"):
        if key in data and data[key] <= 0:
            raise SweepError(f"{source}: {key} must be positive. Received: {key}={data[key]!r}")
    if "precision" in data and not 0 <= data["precision"] < 1:
        raise SweepError(f"{source}: precision is a fraction of the median in [0, 1) (0: no precision rule, "
                         f"rounds fill time_per_case). Received: precision={data['precision']!r}")
    defaults = data.get("defaults", {})
    missing = axes - set(defaults)
    if missing:
        raise SweepError(f"{source}: [defaults] must give every axis; missing {sorted(missing)}")
    grids = data.get("grid", [{}])
    if not isinstance(grids, list) or not grids:
        raise SweepError(f"{source}: [[grid]] must be a list of tables")
    tables = [("[defaults]", defaults)]
    for i, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise SweepError(f"{source}: [[grid]] #{i + 1} must be a table. Received: {grid!r}")
        cpu = grid.get("cpu", {})
        if not isinstance(cpu, dict):
            raise SweepError(f"{source}: [[grid]] #{i + 1}: cpu must be a table of axes. Received: cpu={cpu!r}")
        tables += [(f"[[grid]] #{i + 1}", {k: v for k, v in grid.items() if k != "cpu"})]
        tables += [(f"[[grid]] #{i + 1} cpu", cpu)]
    for where, table in tables:
        for axis, value in table.items():
            if axis not in axes:
                raise SweepError(f"{source}: {where}: unknown axis {axis!r}; axes are {sorted(axes)}")
            if value == []:  # would make no case of this table, silently
                raise SweepError(f"{source}: {where}: {axis} is an empty list; give one value or more. "
                                 f"Received: {axis}=[]")
            for item in value if isinstance(value, list) else [value]:
                _check_value(source, where, axis, item)
    return Sweep(
        name=name,
        source=source,
        description=data.get("description", ""),
        time_per_case=float(data.get("time_per_case", 1.0)),
        min_rounds=int(data.get("min_rounds", 5)),
        max_rounds=int(data.get("max_rounds", 10_000)),
        precision=float(data.get("precision", DEFAULT_PRECISION)),
        case_timeout=float(data.get("case_timeout", DEFAULT_CASE_TIMEOUT)),
        passes=int(data.get("passes", 1)),
        grids=tuple(grids),
        defaults=defaults,
    )


def _check_value(source: str, where: str, axis: str, value) -> None:
    from bench.cases import DTYPES, MODES, Case
    from layers import registry

    def fail(expected: str):
        raise SweepError(f"{source}: {where}: {axis} must be {expected}. Received: {axis}={value!r}")

    if axis in Case.int_axes():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("a positive integer")
    elif axis == "layer":
        if value not in registry.ENTRIES:
            fail(f"one of {sorted(registry.ENTRIES)}")
    elif axis == "implementation":
        from layers import aggregation

        # any backend's: one the sweep's backend lacks is a case skipped with the reason, as `pallas` on TensorFlow
        known = ["*", "auto", registry.BASELINE_IMPLEMENTATION, *aggregation.IMPLEMENTATIONS]
        if value not in known:
            fail(f"one of {known}")
    elif axis == "dtype":
        if value not in DTYPES:
            fail(f"one of {list(DTYPES)}")
    elif axis == "mode":
        if value not in MODES:
            fail(f"one of {list(MODES)}")
    elif axis == "jit" and not (isinstance(value, bool) or value == "default"):
        fail('true, false or "default"')
