"""Tolerances from a measured noise floor, for comparisons that are not bit-identical by construction.

Two runs that differ only in batch size, call splitting, row order or kernel choice still differ in
the last bits: the CPU's GEMM kernels block and reduce differently for each shape, and how they do
it depends on the CPU vendor, the thread count and the torch build (on an AMD EPYC a batch-2 run of
the unpatched test UNet differs from the batch-1 run by ~3e-4 after four steps; on some Intel parts
by 0). A fixed ``atol`` picked on one machine is therefore wrong on another. Instead each test makes
the same comparison on the unpatched model (or with the method off) in the same process and allows
a small multiple of that difference.

The floor is never taken below one fp32 ulp of the largest compared value. Where the patched runs
use call shapes the unpatched comparison does not have (SAG's own call has half the rows of the CFG
call), a CPU may give bit-identical unpatched runs (floor 0) and still round the patched ones
differently; there the floor also includes the patched run's sensitivity to one rounding per model
call (``one_ulp_apart``), measured in the same test.
"""
from __future__ import annotations

import os
import types

import torch

EPS32 = torch.finfo(torch.float32).eps

# SAG runs a second UNet call a step and adds (degraded - its prediction) * scale to the CFG result, so
# a SAG run carries about three times the rounding of a plain run at the same batch layout; 4 leaves a
# margin. Measured on a 2-core AMD EPYC: plain batch 2 vs 1 3.3e-4, SAG 2.9e-4, SAG split vs batched 4.1e-4.
SAG_FACTOR = 4.0


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def noise_floor(*pairs: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The largest max-abs difference of the given (run, other run) pairs of the unpatched model."""
    return max(max_abs(a, b) for a, b in pairs)


def one_ulp_apart(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """t with every element moved by one fp32 rounding (up or down at random): what a kernel that
    rounds differently gives. Running a pipeline once with this applied to its model calls measures
    how far that pipeline carries such a difference (its sensitivity), on any CPU."""
    sign = torch.randint(0, 2, t.shape, generator=generator).to(t) * 2 - 1
    return t + sign * t.abs() * EPS32


def assert_within_noise(got: torch.Tensor, want: torch.Tensor, floor: float, factor: float, why: str = ""):
    """|got - want| <= factor * max(floor, one ulp of max|want|).

    ``factor`` states how much more rounding the patched comparison may accumulate than the
    unpatched one; each caller justifies its factor in a comment. Returns the tolerance, so a
    caller can also check that the effect it guards is far above it (the test can fail).
    """
    ulp = EPS32 * float(want.detach().abs().max())
    tol = factor * max(floor, ulp)
    diff = max_abs(got, want)
    if os.environ.get("SLOTH_NOISE_REPORT"):  # print the measured margins (pytest -s)
        print(f"\nnoise: diff {diff:.3g} floor {floor:.3g} ulp {ulp:.3g} tol {tol:.3g} {why}")
    assert diff <= tol, (f"max-abs difference {diff:.3g} exceeds {factor} x noise floor "
                         f"(floor {floor:.3g}, one ulp {ulp:.3g}) {why}")
    return tol


def assert_near_truth(got: torch.Tensor, truth: torch.Tensor, peer: torch.Tensor, factor: float, why: str = ""):
    """``got`` is about as close to the float64 ``truth`` as ``peer``, the same math done the plain fp32
    way (the reference implementation, or the unpatched layer): the floor is peer's own rounding."""
    return assert_within_noise(got, truth, max_abs(peer, truth), factor, why)


def float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of a module, for computing the truth a fp32 result is measured against."""
    import copy

    copy64 = copy.deepcopy(module).double()
    for m in copy64.modules():
        if getattr(m, "dtype", None) == torch.float32:  # ldm's UNetModel casts x to its self.dtype
            m.dtype = torch.float64
        if isinstance(m, torch.nn.GroupNorm):  # ldm's GroupNorm32 computes in fp32: plain GroupNorm here
            m.forward = types.MethodType(torch.nn.GroupNorm.forward, m)
    time_embed = getattr(copy64, "time_embed", None)
    if time_embed is not None:  # ldm builds the timestep embedding in fp32
        time_embed.register_forward_pre_hook(lambda m, args: tuple(a.double() for a in args))
    return copy64


def run_float64(fn, *args):
    """Call fn with ldm's attention left in the input dtype (it force-casts q, k to fp32 otherwise)."""
    import ldm.modules.attention as ldm_attention

    saved = ldm_attention._ATTN_PRECISION
    ldm_attention._ATTN_PRECISION = "float64"  # any value but "fp32": no cast
    try:
        with torch.no_grad():
            return fn(*args)
    finally:
        ldm_attention._ATTN_PRECISION = saved
