"""The pairwise ReLU: torch formulation against finite differences, C kernel against it."""

from __future__ import annotations

import platform

import pytest
import torch

from pipeline.methods.pairwise_relu import (
    PairwiseReLU,
    cpu_kernel,
    input_gradients,
    kernel_forward,
    kernel_masked_sums,
    pairwise_relu,
)


def _inputs(n: int, columns: int, dim: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(n * 1000 + columns)
    return tuple(torch.randn(*shape, dtype=dtype, generator=generator, requires_grad=True)
                 for shape in ((n, dim), (columns, dim), (dim,)))


def test_torch_formulation_backward_matches_finite_differences():
    assert torch.autograd.gradcheck(PairwiseReLU.apply, _inputs(5, 6, 4, torch.float64))


def _value_and_gradients(function, inputs, grad):
    y = function(*inputs)
    return y, *torch.autograd.grad(y, inputs, grad)


# blocks of 4 rows and 16 columns, and shapes that leave rows and columns over
@pytest.mark.parametrize("shape", [(512, 512, 64), (7, 13, 5), (6, 33, 16), (1, 1, 1)])
def test_cpu_kernel_is_as_accurate_as_torch_in_float32(shape):
    """Against float64, the kernel's error (value and the three gradients) is within twice
    that of the float32 torch formulation: the same sums, in another order."""
    inputs = _inputs(*shape)
    grad = torch.randn(shape[0], shape[1], generator=torch.Generator().manual_seed(1))
    y = pairwise_relu(*inputs)
    assert "PairwiseReLU" not in y.grad_fn.name()  # the C kernel ran
    kernel = _value_and_gradients(pairwise_relu, inputs, grad)
    torch32 = _value_and_gradients(PairwiseReLU.apply, inputs, grad)
    exact = _value_and_gradients(PairwiseReLU.apply,
                                 [t.detach().double().requires_grad_() for t in inputs],
                                 grad.double())
    for ours, theirs, reference in zip(kernel, torch32, exact, strict=True):
        error = (ours.double() - reference).abs().max()
        assert error <= 2 * (theirs.double() - reference).abs().max() + 1e-6


@pytest.mark.skipif(platform.machine() != "x86_64", reason="-mno-avx512f is an x86 flag")
@pytest.mark.parametrize("shape", [(512, 512, 64), (9, 37, 5), (16, 16, 3)])
def test_portable_kernel_loops_match_the_avx512_ones(shape):
    """Built without AVX-512, the kernel runs its portable loops (on an AVX-512 CPU, the
    op runs the intrinsics): the same sums in another order, as accurate against float64."""
    a, b, v = (t.detach() for t in _inputs(*shape))
    grad = torch.randn(shape[0], shape[1], generator=torch.Generator().manual_seed(2))
    exact = _value_and_gradients(PairwiseReLU.apply,
                                 [t.double().requires_grad_() for t in (a, b, v)],
                                 grad.double())
    torch32 = _value_and_gradients(PairwiseReLU.apply,
                                   [t.clone().requires_grad_() for t in (a, b, v)], grad)
    for kernel in (cpu_kernel(), cpu_kernel(("-mno-avx512f",))):
        built = (kernel_forward(kernel, a, b, v),
                 *input_gradients(a, b, v, *kernel_masked_sums(kernel, grad, a, b)))
        for ours, theirs, reference in zip(built, torch32, exact, strict=True):
            error = (ours.double() - reference).abs().max()
            assert error <= 2 * (theirs.double() - reference).abs().max() + 1e-6


def test_cpu_kernel_is_a_well_formed_custom_op():
    """Fake (shape) kernels, autograd registration and schema, as torch.compile needs them."""
    a, b, v = _inputs(9, 20, 8)
    torch.library.opcheck(torch.ops.ssl_pipeline.pairwise_relu.default, (a, b, v))


def test_other_dtypes_use_the_torch_formulation():
    y = pairwise_relu(*_inputs(3, 4, 2, torch.float64))
    assert "PairwiseReLU" in y.grad_fn.name()
