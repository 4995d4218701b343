"""y_ij = sum_d v_d relu(a_id - b_jd) over every pair: the costly part of DSA's relation MLP.

Two implementations of one function, picked by device: on CPU (float32) a C kernel that
is built on first use with the machine's C compiler and registered as a torch custom op,
so `torch.compile` calls it from inside the compiled pair terms; elsewhere (CUDA, other
dtypes) `PairwiseReLU`, torch operations that `torch.compile` fuses into one loop. The
tests hold the kernel to `PairwiseReLU`, and `PairwiseReLU` to finite differences.
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

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC",
         "-std=c11")
if platform.machine() in ("x86_64", "AMD64"):  # use AVX-512's full width where there is one
    FLAGS += ("-mprefer-vector-width=512",)


class PairwiseReLU(torch.autograd.Function):
    """y_ij = sum_d v_d relu(a_id - b_jd) for a [n, D] (rows) and b [N, D] (columns).

    Autograd would take three passes over the n N D pairs backward, one per input. Two do:
    with G = sum_j g_ij [a_id > b_jd] and H = sum_i g_ij [a_id > b_jd], dy/da = G v,
    dy/db = -H v, and since relu(x) = x [x > 0], dy/dv = sum_i a_i G_i - sum_j b_j H_j.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b, v)
        return (F.relu(a[:, None, :] - b[None, :, :]) * v).sum(dim=2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b, v = ctx.saved_tensors
        active = torch.where(a[:, None, :] > b[None, :, :], grad[:, :, None], 0.0)
        return input_gradients(a, b, v, active.sum(dim=1), active.sum(dim=0))


def input_gradients(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor, row_sums: torch.Tensor,
                    column_sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """dy/da, dy/db, dy/dv from the masked sums G (rows) and H (columns)."""
    grad_v = (a * row_sums).sum(dim=0) - (b * column_sums).sum(dim=0)
    return row_sums * v, -column_sums * v, grad_v


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
    """The compiled kernel, cached in the temporary directory by source, flags and CPU
    (`-march=native`: a library built on one CPU may not run on another). `extra_flags`
    let the tests build the portable loops on an AVX-512 CPU (`-mno-avx512f`)."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("DSA on CPU needs a C compiler (gcc) to build its pair kernel")
    flags = (*FLAGS, *extra_flags)
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((compiler, *flags)).encode()
                         + cpu_description().encode())
    directory = Path(tempfile.gettempdir()) / f"ssl_pipeline_kernels_{os.getuid()}"
    library = directory / f"pairwise_relu_{key.hexdigest()[:16]}.so"
    if not library.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"{library.name}.{os.getpid()}.tmp"
        built = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(partial)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{built.stderr}")
        os.replace(partial, library)  # atomic: concurrent workers never load half a file
    kernel = ctypes.CDLL(str(library))
    pointers = [ctypes.c_void_p] * 4
    sizes = [ctypes.c_int64] * 3 + [ctypes.c_int]
    kernel.pairwise_relu_forward.argtypes = pointers + sizes
    kernel.pairwise_relu_backward.argtypes = [*pointers, ctypes.c_void_p, *sizes]
    kernel.pairwise_relu_backward.restype = ctypes.c_int
    return kernel


def kernel_forward(kernel: ctypes.CDLL, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor
                   ) -> torch.Tensor:
    """y [n, N] from the C kernel (`cpu_kernel()`, or another build of it in the tests)."""
    a, columns, v = a.contiguous(), b.t().contiguous(), v.contiguous()
    y = a.new_empty(a.shape[0], b.shape[0])
    kernel.pairwise_relu_forward(a.data_ptr(), columns.data_ptr(), v.data_ptr(), y.data_ptr(),
                                 *y.shape, a.shape[1], torch.get_num_threads())
    return y


def kernel_masked_sums(kernel: ctypes.CDLL, grad: torch.Tensor, a: torch.Tensor,
                       b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked sums G [n, D] and H [N, D] of `PairwiseReLU.backward` from the C kernel."""
    grad, a, columns = grad.contiguous(), a.contiguous(), b.t().contiguous()
    row_sums, column_sums_t = a.new_empty(a.shape), columns.new_empty(columns.shape)
    failed = kernel.pairwise_relu_backward(
        a.data_ptr(), columns.data_ptr(), grad.data_ptr(), row_sums.data_ptr(),
        column_sums_t.data_ptr(), *grad.shape, a.shape[1], torch.get_num_threads())
    if failed:
        raise MemoryError("pairwise ReLU backward: no memory for per-thread column sums")
    return row_sums, column_sums_t.t().contiguous()


@torch.library.custom_op("ssl_pipeline::pairwise_relu", mutates_args=(), device_types="cpu")
def _pairwise_relu_cpu(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return kernel_forward(cpu_kernel(), a, b, v)


@_pairwise_relu_cpu.register_fake
def _(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return a.new_empty(a.shape[0], b.shape[0])


@torch.library.custom_op("ssl_pipeline::pairwise_relu_masked_sums", mutates_args=(),
                         device_types="cpu")
def _masked_sums_cpu(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    return kernel_masked_sums(cpu_kernel(), grad, a, b)


@_masked_sums_cpu.register_fake
def _(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor
      ) -> tuple[torch.Tensor, torch.Tensor]:
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _setup_context(ctx, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a, b, v = ctx.saved_tensors
    return input_gradients(a, b, v, *_masked_sums_cpu(grad, a, b))


_pairwise_relu_cpu.register_autograd(_backward, setup_context=_setup_context)


def pairwise_relu(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[n, D] x [N, D] x [D] -> [n, N]; the C kernel for float32 on CPU, else torch ops."""
    if a.device.type == "cpu" and a.dtype == b.dtype == v.dtype == torch.float32:
        return _pairwise_relu_cpu(a, b, v)
    return PairwiseReLU.apply(a, b, v)
