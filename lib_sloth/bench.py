"""Benchmark: one UNet forward (batch 2 = cond + uncond) per method, against the unpatched UNet
and peers, all measured in the same process with interleaved repetitions.

    python -m lib_sloth.bench [--quick] [--json PATH] [--sizes 512 1024] [--reps N]

The UNet has the real SD1.5 architecture (ldm UNetModel, model_channels 320) with random
weights: speed does not depend on the weights. Like the WebUI's default "sdp" optimisation, the
attention class runs SDPA for every call the methods leave alone (ldm's own forward builds the
full N x N map in einsum, which would flatter every method). fp32 on CPU, fp16 on CUDA when present. Methods
run at their default settings at the step closest to their peak (the schedule's strongest point).
ratio_vs_baseline = baseline median time / case median time (> 1 = faster).
Peak memory: CUDA's allocator peak on GPU; on CPU the resident-set peak above the level before
the call (Linux VmHWM, reset per run through /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, List

import torch

from .patch import SlothPatch
from .prediction import NoiseSpace
from .sag import SagPass
from .settings import settings_from_dict

TOTAL_STEPS = 20


def unet_forward(unet, x, t, ctx, handle):
    unet(x, t, ctx)


@dataclass
class Case:
    name: str
    enter: Callable[[torch.nn.Module], ContextManager]  # context around one timed run
    run: Callable = unet_forward  # (unet, x, t, ctx, what enter yielded) -> None


# ---- SAG: one CFG step (cond + uncond rows, eps model) with and without the guidance ----------
CFG_SCALE = 7.0


def sd15_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def cfg_step(unet, x, t, ctx, sag):
    """Rows [cond, uncond] of one image; SAG arms the uncond row and adds one batch-1 call."""
    if sag is not None:
        sag.arm(slice(-1, None))
    out = unet(x, t, ctx)
    cond, uncond = out[:1], out[1:]
    cfg = uncond + CFG_SCALE * (cond - uncond)
    if sag is not None:
        sag.map_bytes = sag.recorded.nbytes if sag.recorded is not None else 0
        space = NoiseSpace.from_alphas_cumprod(sd15_alphas_cumprod(), t[1:], like=x[1:])
        sag.guide(cfg, x[1:], uncond, lambda xd: unet(xd, t[1:], ctx[1:]), space=space, prediction="eps")


def sag_cases() -> List[Case]:
    settings = settings_from_dict({"sag.enabled": True})

    @contextlib.contextmanager
    def with_sag(unet):
        patch = SlothPatch(unet, settings, seed=1)
        sag = SagPass(settings.sag, patch)
        with patch:
            patch.set_step(0, TOTAL_STEPS)
            yield sag

    return [Case("cfg step", lambda unet: contextlib.nullcontext(), cfg_step),
            Case("cfg step + SAG", with_sag, cfg_step)]


# ---- Show Sloth maps: the recording's cost (each group's first case is its baseline) -----------
def maps_cases() -> List[List[Case]]:
    """Two groups, each the same step without and with a MapRecorder on the patch: one UNet
    forward of Near-sighted Attention (tile + budget recording), and a CFG step with Slothful +
    SAG (budget + SAG map recording). A fresh recorder per run: every call is a step's first."""
    from .maps import MapRecorder

    def patched(data: dict, record: bool):
        settings = settings_from_dict(data)

        @contextlib.contextmanager
        def enter(unet):
            patch = SlothPatch(unet, settings, seed=1)
            patch.recorder = MapRecorder(settings, 1) if record else None
            sag = SagPass(settings.sag, patch) if settings.sag.enabled else None
            with patch:
                patch.set_step(_peak_step(0.4), TOTAL_STEPS)
                yield sag

        return enter

    nsa = {"nearsighted.enabled": True}
    sag = {"slothful.enabled": True, "sag.enabled": True}
    return [[Case("maps off: nearsighted attention", patched(nsa, False)),
             Case("maps on: nearsighted attention", patched(nsa, True))],
            [Case("maps off: cfg step + slothful + SAG", patched(sag, False), cfg_step),
             Case("maps on: cfg step + slothful + SAG", patched(sag, True), cfg_step)]]


def _peak_step(peak_time: float) -> int:
    return round(peak_time * (TOTAL_STEPS - 1))


def sloth_case(name: str, data: dict, step: int | None = None) -> Case:
    settings = settings_from_dict(data)

    @contextlib.contextmanager
    def enter(unet):
        with SlothPatch(unet, settings, seed=1) as patch:
            patch.set_step(_peak_step(0.4) if step is None else step, TOTAL_STEPS)
            yield

    return Case(name, enter)


def tomesd_case(ratio: float) -> Case:
    @contextlib.contextmanager
    def enter(unet):
        import tomesd

        holder = _Holder(unet)
        tomesd.apply_patch(holder, ratio=ratio)
        try:
            yield
        finally:
            tomesd.remove_patch(holder)

    return Case(f"tomesd {ratio}", enter)


class _Holder(torch.nn.Module):
    """tomesd wants the LatentDiffusion-like parent that has .model.diffusion_model."""

    def __init__(self, unet):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet


def default_cases() -> List[Case]:
    cases = [
        Case("unpatched", lambda unet: contextlib.nullcontext()),
        sloth_case("slothful", {"slothful.enabled": True}),
        sloth_case("nearsighted tile", {"tile.enabled": True}),
        sloth_case("nearsighted attention", {"nearsighted.enabled": True}),
    ]
    cases += extra_cases()
    cases.append(tomesd_case(0.5))
    return cases


def extra_cases() -> List[Case]:
    """Cases of methods that live in their own modules (added as they land)."""
    cases: List[Case] = []
    try:
        from . import agentsd  # noqa: F401
    except ImportError:
        return cases
    cases.append(sloth_case("agentsd early", {"agentsd.enabled": True}, step=0))
    cases.append(sloth_case("agentsd late", {"agentsd.enabled": True}, step=TOTAL_STEPS - 1))
    cases.append(tomesd_case(0.4))
    return cases


@contextlib.contextmanager
def sdp_attention():
    """Install an SDPA forward on ldm's CrossAttention, as the WebUI does at model load."""
    from ldm.modules.attention import CrossAttention

    from .attention import attend

    saved = CrossAttention.__dict__["forward"]

    def forward(self, x, context=None, mask=None, **kwargs):
        context = x if context is None else context
        out = attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out(out)

    CrossAttention.forward = forward
    try:
        yield
    finally:
        CrossAttention.forward = saved


def build_unet(device, dtype):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(image_size=64, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=2,
                     attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_heads=8,
                     use_spatial_transformer=True, transformer_depth=1, context_dim=768, legacy=False)
    for m in unet.modules():  # ldm zero-initialises some layers; speed is the same, but be honest
        if hasattr(m, "reset_parameters") and m is not unet:
            m.reset_parameters()
    return unet.to(device=device, dtype=dtype).eval()


class PeakMemory:
    def __init__(self, device):
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with contextlib.suppress(OSError):
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            self.base = _status_kb("VmRSS")

    def stop(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return max(0, _status_kb("VmHWM") - self.base) / 1024


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(sizes, reps, cases, device, dtype, log=print, unet=None):
    """Time every case at every size; the first case is the baseline of its group."""
    unet = unet or build_unet(device, dtype)
    results = []
    for size in sizes:
        lat = size // 8
        g = torch.Generator().manual_seed(size)
        x = torch.randn(2, 4, lat, lat, generator=g).to(device, dtype)
        t = torch.tensor([500, 500], device=device)
        ctx = torch.randn(2, 77, 768, generator=g).to(device, dtype)
        times = {c.name: [] for c in cases}
        mems = {c.name: 0.0 for c in cases}
        extra = {}
        meter = PeakMemory(device)
        with torch.no_grad(), sdp_attention():
            with cases[0].enter(unet) as handle:
                cases[0].run(unet, x, t, ctx, handle)  # warm-up: allocator, kernels
            for rep in range(reps):
                order = cases if rep % 2 == 0 else list(reversed(cases))  # interleave, alternate order
                for case in order:
                    with case.enter(unet) as handle:
                        meter.start()
                        t0 = time.perf_counter()
                        case.run(unet, x, t, ctx, handle)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        times[case.name].append(time.perf_counter() - t0)
                        mems[case.name] = max(mems[case.name], meter.stop())
                        if getattr(handle, "map_bytes", None):
                            extra[case.name] = {"sag_map_mb": round(handle.map_bytes / 2**20, 3)}
                    log(f"  {size}px rep {rep + 1}/{reps} {case.name}: {times[case.name][-1]:.2f}s")
        base = statistics.median(times[cases[0].name])
        for case in cases:
            med = statistics.median(times[case.name])
            results.append({"name": case.name, "size": size, "median_s": round(med, 4),
                            "ratio_vs_baseline": round(base / med, 3), "peak_mem_mb": round(mems[case.name], 1),
                            **extra.get(case.name, {})})
    return results


def sag_map_mb(unet, size: int) -> float:
    """Bytes of SAG's recorded map (one uncond image) at `size` px: heads x N x N fp32, N the
    middle block's tokens. Computed from the layer; the 512 px run measures the same formula."""
    from .layers import find_self_attention

    layer = next(m for m, info in find_self_attention(unet).items() if info.block == "middle")
    downsample = 2 ** sum(1 for m in unet.modules() if type(m).__name__ == "Downsample")
    tokens = (-(-size // 8 // downsample)) ** 2
    return layer.heads * tokens * tokens * 4 / 2**20


def table(results) -> str:
    lines = ["| case | size | median s | speed-up vs baseline | peak mem MB |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['size']}² | {r['median_s']:.3f} | {r['ratio_vs_baseline']:.2f}× "
                     f"| {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="512² only, 1 repetition")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", nargs="+", help="case names to run (the unpatched baseline always runs)")
    ap.add_argument("--sag-sizes", type=int, nargs="*", default=[512], help="sizes of the SAG CFG-step cases")
    ap.add_argument("--maps-sizes", type=int, nargs="*", default=[],
                    help="sizes of the 'Show Sloth maps' recording cases (maps off vs on); none by default")
    args = ap.parse_args(argv)
    sizes, reps = ([512], 1) if args.quick else (args.sizes, args.reps)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cases = default_cases()
    if args.only:
        cases = [cases[0]] + [c for c in cases[1:] if c.name in args.only]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, sizes {sizes}, reps {reps}")
    unet = build_unet(device, dtype)
    results = run(sizes, reps, cases, device, dtype, log, unet)
    if args.sag_sizes and (not args.only or "sag" in args.only):
        results += run(args.sag_sizes, reps, sag_cases(), device, dtype, log, unet)
    for group in maps_cases() if args.maps_sizes else ():
        results += run(args.maps_sizes, reps, group, device, dtype, log, unet)
    report = {"device": str(device) + ("" if device.type == "cuda" else f" ({os.cpu_count()} cores)"),
              "torch": torch.__version__, "cases": results,
              "sag_map_mb_1024": round(sag_map_mb(unet, 1024), 3)}
    print(table(results))
    print(f"SAG map at 1024 px (one uncond image): {report['sag_map_mb_1024']} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
