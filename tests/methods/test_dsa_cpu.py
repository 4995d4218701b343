"""DSA's CPU kernels against the torch formulations, with float64 as the referee."""

from __future__ import annotations

import platform

import pytest
import torch

from pipeline.methods import dsa_cpu
from pipeline.methods.dsa import RelationNet, pair_terms
from pipeline.methods.pairwise_relu import PairwiseReLU, input_gradients


def _assert_as_accurate(ours, torch32, exact):
    """Against float64, each of ours is within twice the error of torch's own float32:
    the same sums in another order (and exp to 2 ulp)."""
    for mine, theirs, reference in zip(ours, torch32, exact, strict=True):
        error = (mine.double() - reference).abs().max()
        assert error <= 2 * (theirs.double() - reference).abs().max() + 1e-6


def _relu_results(a, b, v, grad, kernel=None):
    """y and the gradients of <grad, y> for a, b, v: PairwiseReLU, or the kernel's sums."""
    if kernel is None:
        inputs = [t.detach().requires_grad_() for t in (a, b, v)]
        y = PairwiseReLU.apply(*inputs)
        return y, *torch.autograd.grad(y, inputs, grad)
    columns = b.t().contiguous()
    row_sums, column_sums = dsa_cpu.relu_masked_sums(kernel, grad, a, columns)
    return (dsa_cpu.relu_forward(kernel, a, columns, v),
            *input_gradients(a, b, v, row_sums, column_sums.t()))


def _builds() -> list[tuple[str, ...]]:
    """The native build and, on x86, one without AVX-512: its portable loops."""
    return [(), ("-mno-avx512f",)] if platform.machine() == "x86_64" else [()]


# blocks of rows and 16 columns, and shapes that leave rows and columns over
@pytest.mark.parametrize("flags", _builds())
@pytest.mark.parametrize("shape", [(512, 512, 64), (7, 13, 5), (9, 37, 16), (1, 1, 1)])
def test_relu_kernel_is_as_accurate_as_torch_in_float32(shape, flags):
    n, columns, dim = shape
    generator = torch.Generator().manual_seed(n * 1000 + columns)
    a, b, v = (torch.randn(*s, generator=generator) for s in ((n, dim), (columns, dim), (dim,)))
    grad = torch.randn(n, columns, generator=generator)
    _assert_as_accurate(_relu_results(a, b, v, grad, dsa_cpu.cpu_kernel(flags)),
                        _relu_results(a, b, v, grad),
                        _relu_results(a.double(), b.double(), v.double(), grad.double()))


def _pair_inputs(n: int, size: int, offset: int, gathered: bool):
    """Rows: n local samples per view at `offset` among `size` per view; the columns are
    the gathered batch, or the rows themselves (the same tensor) when nothing is."""
    generator = torch.Generator().manual_seed(n * 100 + size)
    rows_h = torch.randn(2 * n, 16, generator=generator)
    rows_prior = torch.randn(2 * n, 12, generator=generator)
    s = torch.rand(n, generator=generator)
    if not gathered:
        return rows_h, None, rows_prior, None, s
    columns_h = torch.randn(2 * size, 16, generator=generator)
    columns_prior = torch.randn(2 * size, 12, generator=generator)
    for view in (0, 1):
        local, start = slice(view * n, (view + 1) * n), view * size + offset
        columns_h[start:start + n] = rows_h[local]
        columns_prior[start:start + n] = rows_prior[local]
    return rows_h, columns_h, rows_prior, columns_prior, s


def _pair_results(function, relation, inputs, offset, dtype):
    rows_h, columns_h, rows_prior, columns_prior, s = (
        None if t is None else t.to(dtype) for t in inputs)
    rows_h = rows_h.requires_grad_()
    leaves = [rows_h]
    if columns_h is None:
        columns_h, columns_prior = rows_h, rows_prior
    else:
        leaves.append(columns_h.requires_grad_())
    relation = relation.to(dtype)
    terms, blocks, m_positive, m_negative = function(
        relation, rows_h, columns_h, rows_prior, columns_prior, s, offset, 0.5, 0.5)
    loss = torch.log1p(terms / terms.detach()) + 0.01 * blocks.sqrt().sum()
    grads = torch.autograd.grad(loss, [*leaves, *relation.parameters()])
    return (terms.detach(), blocks.detach(), m_positive, m_negative, *grads)


@pytest.mark.parametrize(("n", "size", "offset", "gathered"),
                         [(256, 256, 0, False), (7, 7, 0, False), (5, 12, 3, True),
                          (4, 8, 4, True), (2, 2, 0, False)])
def test_cpu_pair_terms_are_as_accurate_as_the_torch_formulation(n, size, offset, gathered):
    """Values, diagnostics and every gradient (embeddings, relation MLP) against
    `pair_terms` in float32 and in float64, without and with gathered columns."""
    torch.manual_seed(n)
    relation = RelationNet(16)
    inputs = _pair_inputs(n, size, offset, gathered)
    reference = RelationNet(16)
    reference.load_state_dict(relation.state_dict())
    ours = _pair_results(dsa_cpu.cpu_pair_terms, relation, inputs, offset, torch.float32)
    torch32 = _pair_results(pair_terms, relation, inputs, offset, torch.float32)
    exact = _pair_results(pair_terms, reference, inputs, offset, torch.float64)
    _assert_as_accurate(ours, torch32, exact)


def test_cpu_pair_terms_apply_to_float32_sigmoid_relations_on_cpu():
    x = torch.zeros(2, 2)
    assert dsa_cpu.supports("sigmoid", x, x)
    assert not dsa_cpu.supports("row_l1", x)
    assert not dsa_cpu.supports("sigmoid", x, x.double())
    assert not dsa_cpu.supports("sigmoid", x.bfloat16())


def test_cpu_pair_terms_run_in_float32_under_autocast():
    relation = RelationNet(16)
    rows_h, _, rows_prior, _, s = _pair_inputs(6, 6, 0, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, *_ = dsa_cpu.cpu_pair_terms(relation, rows_h, rows_h, rows_prior, rows_prior,
                                           s, 0, 0.5, 0.5)
    expected, *_ = pair_terms(relation, rows_h, rows_h, rows_prior, rows_prior, s, 0, 0.5, 0.5)
    assert terms.dtype == torch.float32
    torch.testing.assert_close(terms, expected)
