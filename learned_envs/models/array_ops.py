"""The few array operations a world model's serving math needs, for torch and for numpy.

A model writes its step once against :class:`TorchOps`' interface and runs it on either
library: torch for batches (and any device), numpy for a single dream on the CPU, where
torch's per-operation dispatch (a few microseconds each, ~50 operations a step) costs more than
the arithmetic. Both sides compute the same functions; they agree to float32 rounding.

Shapes are whatever the caller passes: every operation works on ``[..., F]`` over the last
dimension, and ``affine``/``matmul`` broadcast leading (member) dimensions as ``@`` does.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Output widths below this go through the transposed product on the CPU (see TorchOps.affine).
NARROW = 16
# Member products of at least this many multiply-adds (rows x in x out) go through oneDNN where it
# outruns MKL (see TorchOps.affine); below it oneDNN's fixed cost of ~10 us a call loses anyway
# (on a Zen 5 core: 0.8x MKL's speed at 52 x 128 x 128, 1.26x at 52 x 200 x 200; benchmarks/gemm_backends.py).
ONEDNN_MIN_MACS = 1_500_000


def onednn_linear_op() -> Any:
    """oneDNN's fp32 linear layer as torch ships it (``torch.ops.mkldnn._linear_pointwise``, what
    ``torch.compile``'s CPU backend calls for ``nn.Linear``), or None where this torch build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def onednn_outruns_mkl(cpuinfo: str | None = None) -> bool:
    """True on CPUs where oneDNN's fp32 GEMM beats MKL's: AMD Zen 5 and later (``cpu family`` 26+).

    MKL runs its AVX-512 kernels on Intel CPUs only; on AMD it takes its AVX2 path. Zen 5 executes
    AVX-512 at full width, so oneDNN (which picks kernels by instruction set, not vendor) doubles
    the rate there: one thread of an EPYC Zen 5 core, ~110 GFLOP/s through MKL against ~250 through
    oneDNN on a [205, 128] @ [128, 128] product. Zen 4 and earlier run AVX-512 at half width or not
    at all, and on Intel MKL is at full rate already: there oneDNN's ~10 us a call would only cost.
    A fixed rule, not a timing: the two libraries round some products differently (K > 128), so a
    choice that could flip between runs would make seeded runs differ. ``LEARNED_ENVS_ONEDNN=1``
    or ``=0`` overrides it. ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None)."""
    override = os.environ.get("LEARNED_ENVS_ONEDNN")
    if override in ("0", "1"):
        return override == "1"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: keep MKL
            return False
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, re.MULTILINE)
    family = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.MULTILINE)
    return bool(vendor and family and vendor.group(1) == "AuthenticAMD" and int(family.group(1)) >= 26)


# The op the large member products go through, or None: MKL's batched GEMM for every product.
ONEDNN_LINEAR = onednn_linear_op() if onednn_outruns_mkl() else None


def onednn_takes(multiply_adds: int, weight: torch.Tensor) -> bool:
    """True where one product of ``multiply_adds`` with ``weight`` goes through oneDNN: the CPU rule
    chose it, ``weight`` is float32 on the CPU, and the product is at least ``ONEDNN_MIN_MACS``
    (the dreams' member products and the agents' layers, :mod:`learned_envs.fast_linear`, alike)."""
    return (ONEDNN_LINEAR is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            and multiply_adds >= ONEDNN_MIN_MACS)


@functools.lru_cache(maxsize=None)
def _torch_identity(classes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[classes, classes]`` identity matrix on ``device`` (``index_select`` copies its rows out).
    Made outside inference mode, whichever mode asks first: an inference tensor could not be used
    later under autograd."""
    with torch.inference_mode(False):
        return torch.eye(classes, dtype=dtype, device=device)


class TorchOps:
    """The operations on torch tensors (any device, autograd-safe)."""

    clip = staticmethod(torch.clamp)  # (x, low, high), tensors broadcast
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    sigmoid = staticmethod(torch.sigmoid)
    softplus = staticmethod(F.softplus)
    where = staticmethod(torch.where)  # (condition, x, y), tensors broadcast

    @staticmethod
    def affine(x: torch.Tensor | list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> Any:
        """``x @ weight + bias``, the bias fused into the product (``baddbmm``/``addmm``: the GEMM
        accumulates onto a copy of the broadcast bias). On the CPU that is ~20 us cheaper per
        ``[5, 205, 128]`` layer than a product followed by an in-place add, whose extra pass reads
        and writes the whole output again: ~5-10% of a 1,024-dream step (benchmarks/throughput.py).
        It rounds like the separate add where MKL sums the inner dimension in one block (the
        128-wide CartPole sizes, >= 4 rows a member); elsewhere results can differ in the last bit.

        Large member products outside autograd go through oneDNN instead and may return member
        rows, a list of E ``[B, out]`` tensors (see ``_member_products``; ``dense`` stacks them)."""
        if isinstance(x, list):
            if TorchOps.onednn_worth(x[0].numel(), weight):
                return TorchOps._member_products(x, weight, bias)
            x = torch.stack(x)
        batched = x.dim() == 3 and weight.dim() == 3  # [E, B, in] @ [E, in, out], or [1, B, in] broadcast
        if batched and TorchOps.onednn_worth(x.shape[1] * x.shape[2], weight):
            rows = [x[0]] * weight.shape[0] if x.shape[0] == 1 else list(x.unbind(0))
            return TorchOps._member_products(rows, weight, bias)
        if batched and weight.shape[-1] < NARROW and x.device.type == "cpu":
            # The same product, computed as (weight^T @ x^T + bias^T)^T: the CPU's batched GEMM is
            # ~3.5x slower for a narrow output (an ensemble head of 10 columns, [5, 205, 128] @ [5, 128, 10])
            # than for the transposed problem (benchmarks/throughput.py).
            return torch.baddbmm(bias.transpose(-1, -2), weight.transpose(-1, -2), x.transpose(-1, -2)).transpose(-1, -2)
        if batched and x.shape[0] == weight.shape[0]:
            return torch.baddbmm(bias, x, weight)
        if x.dim() == 2 and weight.dim() == 2:
            return torch.addmm(bias, x, weight)
        return torch.matmul(x, weight).add_(bias)

    @staticmethod
    def onednn_worth(inputs_per_member: int, weight: torch.Tensor) -> bool:
        """True where a member product of ``inputs_per_member`` (rows x in) values with ``weight
        [E, in, out]`` goes through oneDNN: float32 on the CPU, outside autograd, at least
        ``ONEDNN_MIN_MACS`` multiply-adds per member."""
        return not torch.is_grad_enabled() and onednn_takes(inputs_per_member * weight.shape[2], weight)

    @staticmethod
    def _member_products(rows: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
        """``affine`` member by member through oneDNN: E ``[B, in]`` member rows in, E ``[B, out]`` out
        (kept as rows, so that no stacking copy sits between two such layers; ``dense`` stacks them).

        On AMD EPYC Zen 5 cores (``onednn_outruns_mkl``), one thread, a [5, 205, 128] @ [5, 128, 128]
        layer of a 1,024-dream CartPole step takes 200 us against MKL's 310, the oneDNN calls' fixed
        cost included (benchmarks/throughput.py). The same products to float32 rounding (bit-for-bit
        where in <= 128); oneDNN's op has no autograd formula, so fitting's gradient steps never come
        here (its no-grad holdout scores may).
        """
        return [ONEDNN_LINEAR(r, weight[e].t(), bias[e, 0], "none", [], "") for e, r in enumerate(rows)]

    @staticmethod
    def dense(x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """A layer's output as one ``[E, B, out]`` tensor (member rows stacked)."""
        return torch.stack(x) if isinstance(x, list) else x

    @staticmethod
    def silu(x: torch.Tensor | list[torch.Tensor]) -> Any:
        """SiLU, in place (saving an allocation and a pass) unless autograd needs ``x`` for backward;
        callers hand it a fresh product only (a tensor, or member rows: see ``affine``)."""
        if isinstance(x, list):
            return [F.silu(r, inplace=True) for r in x]  # member rows exist outside autograd only
        return F.silu(x, inplace=not torch.is_grad_enabled())

    @staticmethod
    def cat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), dim=-1)

    @staticmethod
    def one_hot(index: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
        """``[*B]`` integer indices -> ``[*B, classes]`` in ``like``'s dtype: rows of a cached identity
        matrix (one ``index_select`` where a comparison and a cast took three passes). Not
        ``F.one_hot``, which checks the indices' range with a device->host copy (the core has
        checked the actions on the host already)."""
        rows = _torch_identity(classes, like.dtype, index.device).index_select(0, index.reshape(-1))
        return rows.reshape(*index.shape, classes)

    @staticmethod
    def as_dtype(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)

    @staticmethod
    def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x[index]`` for ``x [R, F]`` and ``index [B]``: ``index_select``, a third of the cost of
        advanced indexing on a few thousand rows."""
        return x.index_select(0, index)

    @staticmethod
    def zeros(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(rows, cols)

    @staticmethod
    def full_rows(x: torch.Tensor, value: float) -> torch.Tensor:
        """``[..., F] -> [...]`` filled with ``value``."""
        return x.new_full(x.shape[:-1], value)

    @staticmethod
    def select(condition: torch.Tensor, yes: float, no: float, like: torch.Tensor) -> torch.Tensor:
        """``yes`` where ``condition``, else ``no``, in ``like``'s dtype."""
        return torch.where(condition, yes, no).to(like.dtype)

    @staticmethod
    def std0(x: torch.Tensor) -> torch.Tensor:
        """Population std over the first (member) dimension."""
        return x.std(0, unbiased=False)

    @staticmethod
    def amax0(x: torch.Tensor) -> torch.Tensor:
        return x.amax(0)

    @staticmethod
    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., 2F] -> ([..., F], [..., F])``."""
        first, second = x.chunk(2, dim=-1)
        return first, second


@functools.lru_cache(maxsize=None)
def _identity(classes: int, dtype: str) -> np.ndarray:
    """``[classes, classes]`` read-only identity matrix (indexing it copies the rows out)."""
    eye = np.eye(classes, dtype=dtype)
    eye.flags.writeable = False
    return eye


class NumpyOps:
    """The same operations on numpy arrays (host memory); float32 in, float32 out."""

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    where = staticmethod(np.where)

    @staticmethod
    def clip(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        # Two ufuncs: np.clip's own dispatch costs more than both on a small array.
        return np.minimum(np.maximum(x, low), high)

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + NumpyOps._exp_minus(x))

    @staticmethod
    def softplus(x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0, x)

    @staticmethod
    def affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        out = x @ weight
        out += bias
        return out

    @staticmethod
    def dense(x: np.ndarray) -> np.ndarray:
        return x

    @staticmethod
    def silu(x: np.ndarray) -> np.ndarray:
        return x / (1 + NumpyOps._exp_minus(x))

    @staticmethod
    def _exp_minus(x: np.ndarray) -> np.ndarray:
        """``exp(-x)``, its argument capped where float32 would overflow (exp(88) ~ 1.7e38): the
        sigmoid is then ~1e-38 instead of the true ~0 (a tanh form, without overflow, would round
        sigmoid(-20) = 2e-9 to 0 and lose its relative precision)."""
        return np.exp(np.minimum(-x, 88))

    @staticmethod
    def cat(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=-1)

    @staticmethod
    def one_hot(index: np.ndarray, classes: int, like: np.ndarray) -> np.ndarray:
        # Rows of a cached identity: one indexing operation where a comparison took four.
        return _identity(classes, like.dtype.str)[index]

    @staticmethod
    def as_dtype(x: Any, like: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=like.dtype)

    @staticmethod
    def take_rows(x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return x[index]

    @staticmethod
    def zeros(rows: int, cols: int, like: np.ndarray) -> np.ndarray:
        return np.zeros((rows, cols), dtype=like.dtype)

    @staticmethod
    def full_rows(x: np.ndarray, value: float) -> np.ndarray:
        return np.full(x.shape[:-1], value, dtype=x.dtype)

    @staticmethod
    def select(condition: np.ndarray, yes: float, no: float, like: np.ndarray) -> np.ndarray:
        return np.where(condition, like.dtype.type(yes), like.dtype.type(no))

    @staticmethod
    def std0(x: np.ndarray) -> np.ndarray:
        return x.std(0)

    @staticmethod
    def amax0(x: np.ndarray) -> np.ndarray:
        return x.max(0)

    @staticmethod
    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = x.shape[-1] // 2
        return x[..., :half], x[..., half:]


class TorchDraws:
    """Every random draw of a step from a torch generator, as tensors on ``device``."""

    def __init__(self, generator: torch.Generator | None, device: torch.device):
        self.generator, self.device = generator, device

    def integers(self, high: int, size: int) -> torch.Tensor:
        """``[size]`` uniform integers in ``[0, high)``."""
        return torch.randint(high, (size,), device=self.device, generator=self.generator)

    def integer(self, high: int) -> int:
        """One uniform integer in ``[0, high)``, as a Python int."""
        return int(self.integers(high, 1)[0])

    def permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, device=self.device, generator=self.generator)

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``like``'s shape and dtype."""
        return torch.randn(like.shape, device=self.device, dtype=like.dtype, generator=self.generator)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)


class NumpyDraws:
    """The same draws from a numpy generator, as arrays (a torch draw plus its conversion would
    cost more than a single dream's whole numpy step)."""

    def __init__(self, generator: np.random.Generator):
        self.generator = generator

    def integers(self, high: int, size: int) -> np.ndarray:
        # floor(U * high), U uniform on [0, 1) (biased by at most 2**-53): a third of the cost of
        # Generator.integers, whose argument handling outweighs a draw of one.
        return (self.generator.random(size) * high).astype(np.int64)

    def integer(self, high: int) -> int:
        """``integers(high, 1)[0]`` (the same draw from the same stream) as a Python int, without the arrays."""
        return int(self.generator.random() * high)

    def permutation(self, n: int) -> np.ndarray:
        return self.generator.permutation(n)

    def normal(self, like: np.ndarray) -> np.ndarray:
        return self.generator.standard_normal(like.shape, dtype=like.dtype)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)


Draws = TorchDraws | NumpyDraws
