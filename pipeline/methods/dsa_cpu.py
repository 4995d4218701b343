"""DSA's pair terms on CPU: one autograd Function over C kernels (dsa_kernels.c).

Same inputs and outputs as `dsa.pair_terms`, which `torch.compile` runs elsewhere (CUDA,
`relation_norm: row_l1`, other dtypes). On this small a problem (512 x 512 pairs, D = 64
at batch 256) the compiled function's runtime wrappers cost as much as its loops, so on
CPU the forward is two kernel calls and four matrix products, and the backward is written
out: two kernel calls and the products' transposes. The tests hold it to `pair_terms`.

The kernels are built on first use with the machine's C compiler (`-march=native`) and
cached in the temporary directory, keyed by source, flags and CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.methods.pairwise_relu import input_gradients

SOURCE = Path(__file__).with_name("dsa_kernels.c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno",
         "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC", "-std=c11")
if platform.machine() in ("x86_64", "AMD64"):  # use AVX-512's full width where there is one
    FLAGS += ("-mprefer-vector-width=512",)


class PairShape(ctypes.Structure):
    """dsa_kernels.c's PairShape: the [2n, 2N] pair matrix and the scalars of its terms."""

    _fields_ = [("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("local", ctypes.c_int64),
                ("size", ctypes.c_int64), ("offset", ctypes.c_int64), ("bias", ctypes.c_float),
                ("inv_prior_temperature", ctypes.c_float), ("inv_temperature", ctypes.c_float)]


def cpu_description() -> str:
    """The CPU's model and instruction-set flags (Linux), else the architecture's name."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        return "\n".join(sorted({line for line in lines
                                 if line.startswith(("model name", "flags"))}))
    return platform.machine()


@functools.cache
def cpu_kernel(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The compiled kernels, cached in the temporary directory by source, flags and CPU
    (`-march=native`: a library built on one CPU may not run on another). `extra_flags`
    let the tests build the portable loops on an AVX-512 CPU (`-mno-avx512f`)."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("DSA on CPU needs a C compiler (gcc) to build its pair kernels")
    flags = (*FLAGS, *extra_flags)
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((compiler, *flags)).encode()
                         + cpu_description().encode())
    directory = Path(tempfile.gettempdir()) / f"ssl_pipeline_kernels_{os.getuid()}"
    library = directory / f"dsa_kernels_{key.hexdigest()[:16]}.so"
    if not library.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"{library.name}.{os.getpid()}.tmp"
        built = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(partial)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{built.stderr}")
        os.replace(partial, library)  # atomic: concurrent workers never load half a file
    kernel = ctypes.CDLL(str(library))
    pointer, size, threads = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    kernel.pairwise_relu_forward.argtypes = [pointer] * 4 + [size] * 3 + [threads]
    kernel.pairwise_relu_backward.argtypes = [pointer] * 5 + [size] * 3 + [threads]
    kernel.pairwise_relu_backward.restype = ctypes.c_int
    kernel.dsa_pairs_forward.argtypes = [pointer] * 4 + [PairShape, pointer, threads]
    kernel.dsa_pairs_backward.argtypes = [pointer] * 4 + [
        PairShape, ctypes.c_float, pointer, pointer, pointer, threads]
    kernel.dsa_pairs_backward.restype = ctypes.c_double
    return kernel


def relu_forward(kernel: ctypes.CDLL, a: torch.Tensor, columns: torch.Tensor,
                 v: torch.Tensor) -> torch.Tensor:
    """y [n, N] = sum_d v_d relu(a_id - b_jd), from a [n, D] and `columns` = b^T [D, N]."""
    y = a.new_empty(a.shape[0], columns.shape[1])
    kernel.pairwise_relu_forward(a.data_ptr(), columns.data_ptr(), v.data_ptr(), y.data_ptr(),
                                 *y.shape, a.shape[1], torch.get_num_threads())
    return y


def relu_masked_sums(kernel: ctypes.CDLL, grad: torch.Tensor, a: torch.Tensor,
                     columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`PairwiseReLU.backward`'s masked sums: G [n, D] and H^T [D, N] (b^T's layout)."""
    row_sums, column_sums = torch.empty_like(a), torch.empty_like(columns)
    failed = kernel.pairwise_relu_backward(
        a.data_ptr(), columns.data_ptr(), grad.data_ptr(), row_sums.data_ptr(),
        column_sums.data_ptr(), *grad.shape, a.shape[1], torch.get_num_threads())
    if failed:
        raise MemoryError("pairwise ReLU backward: no memory for per-thread column sums")
    return row_sums, column_sums


def supports(relation_norm: str, *tensors: torch.Tensor) -> bool:
    """Whether `cpu_pair_terms` applies: sigmoid relations, float32 tensors on CPU."""
    return relation_norm == "sigmoid" and all(
        t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F.normalize(x, dim=1) and the clamped norms it divides by."""
    norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x / norm, norm


def _unit_backward(grad: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    return (grad - unit * (unit * grad).sum(dim=1, keepdim=True)) / norm


class CPUPairTerms(torch.autograd.Function):
    """`pair_terms` with the relation MLP's weights as inputs: the relation logits are
    y_ij + c with a = W h^a_i + b_hidden, b^T = W h^b_j^T (the columns' layout the kernel
    reads), and P, d come from the Gram matrices of the unit prior features and embeddings.
    """

    @staticmethod
    def forward(ctx, rows_h, columns_h, weight, bias, out_weight, out_bias, rows_prior,
                columns_prior, s, offset: int, prior_temperature: float, temperature: float):
        kernel, threads = cpu_kernel(), torch.get_num_threads()
        same = columns_h is rows_h  # not gathered: the rows are the columns
        a = torch.addmm(bias, rows_h, weight.t())
        columns = weight @ columns_h.t()
        v = out_weight.reshape(-1).contiguous()
        m = relu_forward(kernel, a, columns, v)
        rows_unit, rows_norm = _unit(rows_h)
        columns_unit, columns_norm = (rows_unit, rows_norm) if same else _unit(columns_h)
        gram_h = rows_unit @ columns_unit.t()
        prior_rows = F.normalize(rows_prior, dim=1)
        prior_columns = (prior_rows if columns_prior is rows_prior
                         else F.normalize(columns_prior, dim=1))
        gram_prior = prior_rows @ prior_columns.t()
        rows, cols = m.shape
        shape = PairShape(rows, cols, rows // 2, cols // 2, offset, out_bias.item(),
                          1 / prior_temperature, 1 / temperature)
        s = s.contiguous()
        sums = torch.empty(8, dtype=torch.float64)
        kernel.dsa_pairs_forward(m.data_ptr(), gram_h.data_ptr(), gram_prior.data_ptr(),
                                 s.data_ptr(), shape, sums.data_ptr(), threads)
        ctx.save_for_backward(rows_h, columns_h, weight, v, a, columns, m, gram_h, gram_prior,
                              s, rows_unit, rows_norm, columns_unit, columns_norm)
        ctx.shape = shape
        sums = sums.float()
        m_positive = sums[6] / rows
        m_negative = (sums[5] - sums[6] - sums[7]) / (rows * (cols - 2))
        return sums[0], sums[1:5].view(2, 2), m_positive, m_negative

    @staticmethod
    def backward(ctx, grad_terms, grad_blocks, _grad_m_positive, _grad_m_negative):
        (rows_h, columns_h, weight, v, a, columns, m, gram_h, gram_prior, s, rows_unit,
         rows_norm, columns_unit, columns_norm) = ctx.saved_tensors
        kernel, threads = cpu_kernel(), torch.get_num_threads()
        grad_y, grad_gram = torch.empty_like(m), torch.empty_like(m)
        blocks = grad_blocks.reshape(-1).contiguous()
        grad_out_bias = kernel.dsa_pairs_backward(
            m.data_ptr(), gram_h.data_ptr(), gram_prior.data_ptr(), s.data_ptr(), ctx.shape,
            grad_terms.item(), blocks.data_ptr(), grad_y.data_ptr(), grad_gram.data_ptr(),
            threads)
        row_sums, column_sums = relu_masked_sums(kernel, grad_y, a, columns)
        grad_a, grad_b, grad_v = input_gradients(a, columns.t(), v, row_sums, column_sums.t())
        grad_weight = grad_a.t() @ rows_h + grad_b.t() @ columns_h
        grad_rows = grad_a @ weight + _unit_backward(grad_gram @ columns_unit, rows_unit,
                                                     rows_norm)
        grad_columns = grad_b @ weight + _unit_backward(grad_gram.t() @ rows_unit,
                                                        columns_unit, columns_norm)
        # with nothing gathered, rows_h and columns_h are one tensor: autograd adds both
        return (grad_rows, grad_columns, grad_weight, grad_a.sum(dim=0), grad_v.view(1, -1),
                grad_a.new_full((1,), grad_out_bias), None, None, None, None, None, None)


def cpu_pair_terms(relation, rows_h: torch.Tensor, columns_h: torch.Tensor,
                   rows_prior: torch.Tensor, columns_prior: torch.Tensor, s: torch.Tensor,
                   offset: int, prior_temperature: float, temperature: float
                   ) -> tuple[torch.Tensor, ...]:
    """`dsa.pair_terms` (same arguments and results) for sigmoid relations, in float32 on
    CPU; pass the same tensor as rows and columns when nothing is gathered."""
    with torch.autocast("cpu", enabled=False):  # the kernels read float32
        return CPUPairTerms.apply(rows_h, columns_h, relation.hidden.weight,
                                  relation.hidden.bias, relation.out.weight,
                                  relation.out.bias, rows_prior, columns_prior, s, offset,
                                  prior_temperature, temperature)
