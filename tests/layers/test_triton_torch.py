"""The Triton kernels' PyTorch custom operators (`layers.aggregation.triton_torch`)
checked by `torch.library.opcheck`: schema, fake (shapes, dtypes and strides
as the operator returns them, which TorchInductor asserts), autograd
registration and AOTAutograd with dynamic shapes. Their values are checked
against the float64 NumPy reference in test_aggregation.py and
test_involution.py; here the kernels run in Triton's interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from layers import aggregation
from tests import backend as tb

pytestmark = pytest.mark.skipif(tb.NAME != "torch" or "triton" not in aggregation.names(),
                                reason="the Triton kernels' PyTorch custom operators exist on PyTorch with Triton "
                                       "only; tox's PyTorch run (`tox -e torch`) runs this test")

OPERATORS = ["aggregate", "aggregate_kernel_grad", "aggregate_input_grad", "aggregate_hidden", "generation_grad",
             "generated_input_grad", "involution"]


def _arguments(name: str) -> tuple:
    """The operator's arguments at one odd-sized, strided geometry. The input
    is a permuted view (not contiguous, as in a compiled graph where it comes
    from a transpose): an operator's fake must still give the strides of what
    it returns, a contiguous tensor."""
    import torch

    rng = np.random.default_rng(0)
    b, h, w, c, k, s, g, r = 2, 7, 6, 8, 3, 2, 2, 4
    ho, wo, t = (h + s - 1) // s, (w + s - 1) // s, g * k * k

    def tensor(*shape, grad=True):
        return torch.tensor(rng.standard_normal(shape), dtype=torch.float32, requires_grad=grad)

    x = tensor(b, c, h, w).permute(0, 2, 3, 1)  # (B, H, W, C), channels-first in memory
    kernel, dy = tensor(b, ho, wo, t), tensor(b, ho, wo, c, grad=False)
    hidden, w_span, b_span = tensor(b, ho, wo, r), tensor(r, t), tensor(t)
    pooled, w_reduce, b_reduce = tensor(b, ho, wo, c, grad=False), tensor(c, r, grad=False), tensor(r, grad=False)
    x0, kernel0, hidden0, w_span0, b_span0 = (v.detach() for v in (x, kernel, hidden, w_span, b_span))
    return {
        "aggregate": (x, kernel),
        "aggregate_kernel_grad": (x0, kernel0, dy),
        "aggregate_input_grad": (x0, kernel0, dy),
        "aggregate_hidden": (x, hidden, w_span, b_span),
        "generation_grad": (x0, hidden0, w_span0, dy),
        "generated_input_grad": (x0, hidden0, w_span0, b_span0, dy),
        "involution": (x0, pooled, w_reduce, b_reduce, w_span0, b_span0),
    }[name] + (k, s, g)


def test_every_operator_is_checked_here():
    import torch

    from layers.aggregation import triton_torch

    assert triton_torch  # registers the operators
    assert {name for name in dir(torch.ops.involution) if not name.startswith("_")} - {"name"} == set(OPERATORS)


@pytest.mark.parametrize("name", OPERATORS)
def test_custom_operator_passes_opcheck(name):
    import torch

    from layers.aggregation import triton_torch

    assert triton_torch  # registers the operators
    torch.library.opcheck(getattr(torch.ops.involution, name).default, _arguments(name))


@pytest.mark.parametrize("name", OPERATORS)
def test_operator_computes_what_its_eager_call_computes(name):
    """The two ways of calling a launch (`triton_torch._call`): the custom
    operator (under torch.compile) and the function itself (eagerly, in an
    autograd Function where a gradient is wanted), outputs and gradients."""
    import torch

    from layers.aggregation import triton_torch

    args = _arguments(name)
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    results = {}
    for way, call in (("operator", getattr(triton_torch.OPERATORS, name)),
                      ("eager", lambda *a: triton_torch._call(name, *a))):
        out = call(*args)
        outs = list(out) if isinstance(out, tuple) else [out]
        if tensors:
            outs += torch.autograd.grad(outs[0], tensors, torch.ones_like(outs[0]))
        results[way] = [t.detach().numpy() for t in outs]
    for a, b in zip(results["operator"], results["eager"], strict=True):
        np.testing.assert_array_equal(a, b)
