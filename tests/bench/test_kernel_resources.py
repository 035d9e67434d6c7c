"""`bench.kernel_resources`: the GPU kernels compiled (Triton) and lowered
(Pallas) for CUDA on a machine without a GPU, and the figures read from them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from unittest import mock

import pytest

from bench import kernel_resources as kr
from tests import backend as tb


def _case(implementation: str, groups: int, dtype: str = "float32", mode: str = "inference") -> kr.KernelCase:
    """An odd geometry: 9 px, stride 2, K = 3, 48 channels; 3 groups of 16
    (the aligned case) or 4 groups of 12 (masked channel blocks)."""
    return kr.KernelCase(implementation, 9, 48, groups, kernel_size=3, stride=2, dtype=dtype, mode=mode)


KERNELS = {
    "triton": {"inference": {"_fwd_kernel"}, "training": {"_fwd_kernel", "_dk_kernel", "_dx_kernel"}},
    "triton_fused": {"inference": {"_fused_kernel"}, "training": {"_fused_kernel", "_dgen_kernel", "_dx_gen_kernel"}},
    "pallas": {"inference": {"_fwd_kernel"}, "training": {"_fwd_kernel", "_dk_kernel", "_dx_kernel"}},
    "pallas_fused": {"inference": {"_fused_kernel"}, "training": {"_fused_kernel", "_dgen_kernel", "_dx_gen_kernel"}},
}


def test_occupancy_on_sm90():
    # 255 registers: 8,192 a warp (units of 256), 2 blocks of 4 warps in 65,536.
    assert kr.occupancy(255, 4, 0, 90) == pytest.approx(8 / 64)
    # 32 registers: the 64-warp limit binds first.
    assert kr.occupancy(32, 4, 0, 90) == pytest.approx(1.0)
    # 100 KB of shared memory a block (+1 KB reserved): 2 blocks in 228 KB.
    assert kr.occupancy(32, 4, 100 * 1024, 90) == pytest.approx(8 / 64)
    assert kr.occupancy(32, 4, 0, 75) is None


@pytest.mark.skipif(tb.NAME != "torch", reason="Triton kernels are the PyTorch backend's")
def test_specialisation_follows_tritons_rules():
    launch = kr.triton_launches(_case("triton", 3))[0]
    signature, constexprs, attrs, options = kr._specialised(launch, launch.configs[0])
    names = [param.name for param in launch.jit.params]
    assert signature["x_ptr"] == "*fp32" and attrs[(names.index("x_ptr"),)] == [["tt.divisibility", 16]]
    # C = 48 is a multiple of 16: specialised; image sizes are not (do_not_specialize).
    assert attrs[(names.index("C"),)] == [["tt.divisibility", 16]]
    assert signature["H"] == "i32" and (names.index("H"),) not in attrs
    assert constexprs[(names.index("K"),)] == 3 and constexprs[(names.index("STRIDE"),)] == 2
    config = launch.configs[0]
    assert constexprs[(names.index("BLOCK_P"),)] == config.kwargs["BLOCK_P"]
    # FMA contraction pinned on, as the launchers pass it (Triton 3.10 changes the default)
    assert options == {"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": True}


@pytest.mark.skipif(tb.NAME != "torch", reason="Triton kernels are the PyTorch backend's")
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("implementation", ["triton", "triton_fused"])
def test_every_triton_kernel_compiles_for_sm90(implementation, dtype, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compiled here, not found in a cache
    compiled, digests = set(), set()
    for mode in ("inference", "training"):
        launches = kr.triton_launches(_case(implementation, 3 if implementation == "triton" else 4, dtype, mode))
        assert {launch.kernel for launch in launches} == KERNELS[implementation][mode]
        for launch in launches:
            element = "*bf16" if dtype == "mixed_bfloat16" else "*fp32"
            assert kr._specialised(launch, None)[0]["x_ptr" if "x_ptr" in launch.arguments else "dy_ptr"] == element
            if launch.kernel in compiled:
                continue
            build = kr.compile_launch(launch, launch.configs[0] if launch.configs else None)
            compiled.add(launch.kernel)
            assert 0 < build.registers <= 255
            assert build.instructions > 100 and build.compile_s > 0
            assert 0 < build.occupancy <= 1
            assert re.fullmatch("[0-9a-f]{16}", build.sass_sha1)
            digests.add(build.sass_sha1)
    assert compiled == KERNELS[implementation]["training"] | KERNELS[implementation]["inference"]
    assert len(digests) == len(compiled)  # each kernel its own machine code


@pytest.mark.skipif(tb.NAME != "jax", reason="Pallas kernels are the JAX backend's")
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("implementation", ["pallas", "pallas_fused"])
def test_every_pallas_kernel_lowers_for_cuda(implementation, mode, dtype):
    row = kr.pallas_lowering(_case(implementation, 4, dtype, mode))
    assert set(row["kernel_names"].split(",")) == KERNELS[implementation][mode]
    assert row["triton_calls"] == len(KERNELS[implementation][mode])
    assert row["jax_version"] == importlib.metadata.version("jax")  # 0.10 and 0.11 reach the lowering differently


@pytest.mark.skipif(tb.NAME != "jax", reason="Pallas kernels are the JAX backend's")
def test_pallas_lowers_for_a_named_capability_only(capsys):
    """JAX 0.11 lowers for an abstract GPU of --arch, taken from JAX's table of
    GPUs; JAX 0.10 for 9.0 only. A capability neither can is one line."""
    with kr._abstract_gpu(kr.DEFAULT_ARCH):
        pass
    with pytest.raises(ValueError, match="Received: --arch=71$"), kr._abstract_gpu(71):
        pass
    assert kr.main(["--arch", "71", "--out", "/nonexistent"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: --arch: ") and "Received: --arch=71" in error


@pytest.mark.skipif(tb.NAME != "jax", reason="jax-triton calls Triton kernels from JAX")
@pytest.mark.skipif(importlib.util.find_spec("jax_triton") is None, reason="jax-triton is not installed")
# Every kernel in one dtype or the other (the PyTorch run compiles each in both):
# what is checked here is how jax-triton receives the arguments.
@pytest.mark.parametrize("implementation, mode, dtype", [
    ("triton", "inference", "float32"), ("triton", "training", "mixed_bfloat16"),
    ("triton_fused", "inference", "mixed_bfloat16"), ("triton_fused", "training", "float32"),
])
def test_every_triton_kernel_lowers_through_jax_triton(implementation, mode, dtype):
    """jax-triton compiles each kernel for sm_90 while lowering; each call
    gets the integers the kernel's signature names, in its order (those
    equal to 1 are compiled in), and the outputs after them."""
    from layers.aggregation import triton_jax
    from layers.aggregation import triton_kernels as tk
    from layers.aggregation._common import Geometry

    case = _case(implementation, 4, dtype, mode)
    compiled_call = triton_jax._compiled_call
    dtypes = []

    def spy(name, geo, pixels, programs, inputs, outputs, arguments):
        dtypes.extend(str(array.dtype) for key, array in inputs.items() if key in ("x_ptr", "dy_ptr"))
        return compiled_call(name, geo, pixels, programs, inputs, outputs, arguments)

    with mock.patch.object(triton_jax, "_compiled_call", spy):
        row = kr.jax_triton_lowering(case)
    # the input reaches the kernels in the compute dtype, as the sweep calls the layer
    assert set(dtypes) == {"bfloat16" if dtype == "mixed_bfloat16" else "float32"}
    assert set(row["kernel_names"].split(",")) == KERNELS[implementation][mode]
    assert row["triton_calls"] == len(row["calls"]) == len(KERNELS[implementation][mode])
    assert row["triton_version"] == importlib.metadata.version("triton")  # jax-triton's compiler
    assert row["jax_version"] == importlib.metadata.version("jax")
    geo = Geometry.of((1, case.resolution, case.resolution, case.channels), case.kernel_size, case.stride, 4)
    values = {**tk.sizes(geo), "N_CBLK": geo.channel_blocks, "R": case.channels // case.reduction_ratio}
    sources = dict(zip(tk.Kernels._fields, tk.SOURCES, strict=True))
    for call in row["calls"]:
        source = next(fn for fn in sources.values() if fn.__name__ == call.kernel)
        params = [p for p in source.__code__.co_varnames[: source.__code__.co_argcount]
                  if p not in source.__annotations__]
        pixels = geo.phase_pixels if call.kernel.startswith("_dx") else geo.out_pixels  # dx: one stride phase
        expected = tuple(v for v in ({**values, "n_pix": pixels}[p] for p in params if not p.endswith("_ptr"))
                         if v != 1)
        assert call.scalars == expected, call.kernel
        assert call.arrays == sum(p.endswith("_ptr") for p in params)
        assert call.ptx_bytes > 1000
        assert call.configs == (1 if call.kernel == "_dgen_kernel" else len(tk._CONFIGS))


@pytest.mark.skipif(tb.NAME != "jax", reason="jax-triton calls Triton kernels from JAX")
@pytest.mark.skipif(importlib.util.find_spec("jax_triton") is None, reason="jax-triton is not installed")
def test_jax_triton_loads_aligned_channels_as_vectors():
    """jax-triton does not specialise integers on their divisibility as
    Triton's launcher does; the kernels' hints (C_DIV, CG_DIV) give it back:
    with 16 channels a group, the forward kernel loads them 128 bits at a time."""
    (call,) = kr.jax_triton_lowering(_case("triton", 3))["calls"]  # 48 channels, 3 groups of 16
    assert call.vector_loads > 0
    (call,) = kr.jax_triton_lowering(_case("triton", 4))["calls"]  # groups of 12: no 16-lane masks
    assert call.vector_loads == 0


@pytest.mark.skipif(tb.NAME != "tensorflow", reason="the refusal is checked on the backend without kernels")
def test_tensorflow_is_refused_in_one_line(capsys):
    assert kr.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "KERAS_BACKEND=tensorflow" in err


def test_a_bad_arch_is_refused_in_one_line(capsys):
    assert kr.main(["--arch", "60"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Received: --arch=60" in err


def test_an_unwritable_out_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert kr.main(["--out", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --out {tmp_path / 'a-file' / 'out'}: cannot be")


def test_a_bad_stride_is_refused_in_one_line(capsys):
    assert kr.main(["--stride", "0"]) == 2
    assert kr.main(["--stride", "2", "--sweep", "gpu"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "Received: --stride=0" in lines[0] and "--stride=2 with --sweep=gpu" in lines[1]


def test_the_rednet_stages_at_a_stride():
    cases = kr.rednet_cases("torch", stride=2)
    assert cases and {case.stride for case in cases} == {2}
    assert {case[:5] for case in cases} == {case[:5] for case in kr.rednet_cases("torch")}


@pytest.mark.skipif(tb.NAME == "tensorflow", reason="TensorFlow is refused before the kernels are looked at")
def test_bad_kernel_names_are_refused_in_one_line(capsys):
    """--kernels names Triton kernels, which only PyTorch builds here (JAX: their lowering)."""
    assert kr.main(["--kernels", "_dx_kernel,_nope" if tb.NAME == "torch" else "_dx_kernel"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--kernels takes some of _fwd_kernel," in err
    assert f"Received: --kernels={'_dx_kernel,_nope' if tb.NAME == 'torch' else '_dx_kernel'} on {tb.NAME}" in err


@pytest.mark.skipif(tb.NAME != "torch", reason="the Triton binaries are built from PyTorch's launches")
def test_only_the_kernels_named_are_built(tmp_path, monkeypatch):
    import triton

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    rows = list(kr.triton_rows([_case("triton", 3, "float32", "training")], all_configs=False,
                               kernels={"_dx_kernel"}))
    assert [row["kernel"] for row in rows] == ["_dx_kernel"] and rows[0]["sass_sha1"]
    assert rows[0]["triton_version"] == triton.__version__  # the compiler the figures are of
