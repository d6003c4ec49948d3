"""Benchmark: one UNet forward (batch 2 = cond + uncond) per method, against the unpatched UNet,
its physical limit and peers, all measured in the same process with interleaved repetitions.

    python -m lib_sloth.bench [--quick] [--json PATH] [--sizes 512 1024] [--reps N] [--threads N]
                              [--device auto|cpu|cuda] [--profile] [--substrate ldm|diffusers]

The UNet has the real SD1.5 architecture (ldm UNetModel, model_channels 320) with random
weights: speed does not depend on the weights. Like the WebUI's default "sdp" optimisation, the
attention class runs SDPA for every call the methods leave alone (ldm's own forward builds the
full N x N map in einsum, which would flatter every method). fp32 on CPU, fp16 on CUDA when present. Methods
run at their default settings at the step closest to their peak (the schedule's strongest point).
ratio_vs_baseline = baseline median time / case median time (> 1 = faster).
The ceiling case is the same UNet with every self-attention call (attn1) made free: it returns
zeros of the right shape and every other layer runs unchanged, so no attn1 rewrite can be faster.
share_of_ceiling = (baseline - case) / (baseline - ceiling): the part of the removable time a
method removed. The baseline runs twice per repetition ("unpatched (repeat)", timed at the
other end of the order); their difference is the run's own noise.
On CPU every timed run also splits the time inside attn1 into its projections, SDPA and the
rest (bench_profile.attn1_stages); bound_ratio = baseline / (ceiling + projections + SDPA) is the
speed-up a case would reach if its other attn1 work were free.
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

import torch

from .bench_profile import ATTN1_STAGES, StageClock, attn1_stages
from .bench_cases import (  # noqa: F401  (re-exported: the cases are part of the bench's interface)
    TOTAL_STEPS, Case, SlothPatch, build_unet, case_step, ceiling_case, cfg_step, default_cases,
    free_self_attention, guidance_cases, maps_cases, sag_cases, sdp_attention, sloth_case, sloth_cases, tomesd_case,
    unpatched_case)


class DeviceClock:
    """Timing and peak memory on one device.

    CUDA runs kernels asynchronously: every timing is bracketed by torch.cuda.synchronize, and
    memory is the allocator's peak (reset per case) above what was allocated before the call.
    On CPU memory is the resident-set peak above the level before the call (Linux VmHWM, reset
    through /proc/self/clear_refs). `cuda` overrides the device type: the tests drive the CUDA
    path with CPU tensors and recording stand-ins of the torch.cuda calls.
    """

    def __init__(self, device: torch.device, cuda: bool | None = None):
        self.device = device
        self.cuda = device.type == "cuda" if cuda is None else cuda
        self.base = 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError):
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            self.base = _status_kb("VmRSS")

    def peak_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
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


def run(sizes, reps, cases, device, dtype, log=print, unet=None, warmup: str | None = None,
        clock: DeviceClock | None = None, timer: str = "wall", attribute: bool | None = None,
        substrate: str = "ldm"):
    """Time every case at every size; the first case is the baseline of its group.

    timer: what median_s, the ratio and the share are computed from: "wall" (perf_counter) or
    "cpu" (the process's CPU time: on a machine shared with other jobs, one torch thread's CPU
    time counts the work done and not the time spent waiting for a core). Both medians are in
    every row (wall_median_s, cpu_median_s).

    warmup: "all" runs every case once untimed before the timed repetitions (kernel selection
    and the allocator settle per shape: the CUDA default), "baseline" only the first case (the
    CPU default: its kernels do not tune per shape, and a 1024² forward costs a minute).
    attribute: time every attn1 call of the timed runs by stage (bench_profile.attn1_stages; on
    by default on CPU, off on CUDA, where each stage would need a synchronize).
    substrate: "ldm" (the default UNet gets the WebUI's SDPA forward) or "diffusers" (its own
    AttnProcessor2_0 is SDPA already; no per-stage attribution: its hooks read ldm's layers).
    Each row: name, size, median_s, ratio_vs_baseline, share_of_ceiling (None without a
    ceiling case), peak_mem_mb, times_s (every repetition); with `attribute` also attn1_s
    (median seconds per stage) and bound_ratio (see `bound_ratio`).
    """
    unet = unet or build_unet(device, dtype)
    clock = clock or DeviceClock(device)
    warmup = warmup or ("all" if clock.cuda else "baseline")
    ldm = substrate == "ldm"
    attribute = (not clock.cuda and ldm) if attribute is None else attribute
    results = []
    for size in sizes:
        lat = size // 8
        g = torch.Generator().manual_seed(size)
        x = torch.randn(2, 4, lat, lat, generator=g).to(device, dtype)
        t = torch.tensor([500, 500], device=device)
        ctx = torch.randn(2, 77, 768, generator=g).to(device, dtype)
        times = {c.name: [] for c in cases}
        cpu = {c.name: [] for c in cases}
        mems = {c.name: 0.0 for c in cases}
        stages = {c.name: [] for c in cases}
        extra = {}
        with torch.no_grad(), (sdp_attention() if ldm else contextlib.nullcontext()):
            for case in cases if warmup == "all" else cases[:1]:  # untimed
                with case.enter(unet) as handle:
                    case.run(unet, x, t, ctx, handle)
                clock.sync()
            for rep in range(reps):
                order = cases if rep % 2 == 0 else list(reversed(cases))  # interleave, alternate order
                for case in order:
                    stage_clock = StageClock(device, timer)
                    with case.enter(unet) as handle, (attn1_stages(unet, stage_clock) if attribute
                                                      else contextlib.nullcontext()):
                        clock.start()
                        clock.sync()
                        t0, c0 = time.perf_counter(), time.process_time()
                        case.run(unet, x, t, ctx, handle)
                        clock.sync()
                        times[case.name].append(time.perf_counter() - t0)
                        cpu[case.name].append(time.process_time() - c0)
                        mems[case.name] = max(mems[case.name], clock.peak_mb())
                        stages[case.name].append(dict(stage_clock.totals))
                        if getattr(handle, "map_bytes", None):
                            extra[case.name] = {"sag_map_mb": round(handle.map_bytes / 2**20, 3)}
                    log(f"  {size}px rep {rep + 1}/{reps} {case.name}: {times[case.name][-1]:.2f}s "
                        f"(cpu {cpu[case.name][-1]:.2f}s)")
        wall_med = {c.name: statistics.median(times[c.name]) for c in cases}
        cpu_med = {c.name: statistics.median(cpu[c.name]) for c in cases}
        # the ratio, share and bound come from the rounded medians the rows report, so each row can
        # be recomputed from the table itself, exactly
        med = {name: round(v, 6) for name, v in (cpu_med if timer == "cpu" else wall_med).items()}
        base = med[cases[0].name]
        ceiling = next((med[c.name] for c in cases if c.role == "ceiling"), None)
        for case in cases:
            attn1 = {}
            if attribute:
                attn1 = {"attn1_s": {s: round(statistics.median(r.get(s, 0.0) for r in stages[case.name]), 6)
                                     for s in ATTN1_STAGES}}
                attn1["bound_ratio"] = bound_ratio(base, ceiling, attn1["attn1_s"])
            results.append({"name": case.name, "role": case.role, "size": size, "median_s": med[case.name],
                            "ratio_vs_baseline": round(base / med[case.name], 3) if med[case.name] > 0 else None,
                            "share_of_ceiling": share_of_ceiling(base, med[case.name], ceiling),
                            "peak_mem_mb": round(mems[case.name], 1), "timer": timer,
                            "wall_median_s": round(wall_med[case.name], 4), "cpu_median_s": round(cpu_med[case.name], 4),
                            "times_s": [round(v, 4) for v in times[case.name]],
                            "cpu_times_s": [round(v, 4) for v in cpu[case.name]], **attn1, **extra.get(case.name, {})})
    return results


def share_of_ceiling(baseline: float, case: float, ceiling: float | None) -> float | None:
    """(baseline - case) / (baseline - ceiling): 0 = nothing removed, 1 = all that attn1 costs.
    None without a ceiling, or when the ceiling is not below the baseline (nothing to remove)."""
    if ceiling is None or baseline - ceiling <= 0:
        return None
    return round((baseline - case) / (baseline - ceiling), 3)


def bound_ratio(baseline: float, ceiling: float | None, attn1_s: dict) -> float | None:
    """baseline / (ceiling + the case's attn1 projections + SDPA): the speed-up the case would reach
    if everything else it adds to attn1 (pooling, tile copies, matching, merge, glue) were free.
    Projections and SDPA are the arithmetic the method's own K/V and query counts ask of the same
    GEMM and SDPA kernels the unpatched UNet uses, so no rewrite with these counts gets past this
    bound without a faster kernel. None without a ceiling."""
    total = None if ceiling is None else ceiling + attn1_s["projections"] + attn1_s["sdpa"]
    return round(baseline / total, 3) if total else None


def summary(results) -> dict:
    """Per size (as a string key): ceiling_s, and the noise of the run from its two baselines:
    baseline_s / repeat_s (medians) and noise = |1 - baseline/repeat|."""
    out: dict = {"ceiling_s": {}, "noise": {}}
    for size in sorted({r["size"] for r in results}):
        rows = [r for r in results if r["size"] == size]
        for r in rows:
            if r["role"] == "ceiling":
                out["ceiling_s"][str(size)] = r["median_s"]
        groups = [r for r in rows if r["role"] in ("baseline", "repeat")]
        for base, rep in zip(groups[0::2], groups[1::2]):
            key = str(size) if base["name"] == "unpatched" else f"{size} {base['name']}"
            out["noise"][key] = {"baseline_s": base["median_s"], "repeat_s": rep["median_s"],
                                 "noise": round(abs(1 - base["median_s"] / rep["median_s"]), 3)}
    return out


def sag_map_mb(unet, size: int, find_layers=None) -> float:
    """Bytes of SAG's recorded map (one uncond image) at `size` px: heads x N x N fp32, N the
    middle block's tokens. Computed from the layer; the 512 px run measures the same formula."""
    from .layers import find_self_attention

    layer = next(m for m, info in (find_layers or find_self_attention)(unet).items() if info.block == "middle")
    downsample = 2 ** sum(1 for m in unet.modules() if type(m).__name__ in ("Downsample", "Downsample2D"))
    tokens = (-(-size // 8 // downsample)) ** 2
    return layer.heads * tokens * tokens * 4 / 2**20


def table(results) -> str:
    """Markdown rows; with the attn1 attribution also its three stages (s) and the bound."""
    attributed = any("attn1_s" in r for r in results)
    head = "| case | size | median s | speed-up vs baseline | share of ceiling |"
    if attributed:
        head += " attn1 proj s | attn1 sdpa s | attn1 other s | bound |"
    lines = [head + " peak mem MB |", "|---|" + "---:|" * (head.count("|") - 1)]
    for r in results:
        share = "" if r.get("share_of_ceiling") is None else f"{100 * r['share_of_ceiling']:.0f} %"
        ratio = "" if r["ratio_vs_baseline"] is None else f"{r['ratio_vs_baseline']:.2f}×"
        row = f"| {r['name']} | {r['size']}² | {r['median_s']:.3f} | {ratio} | {share} |"
        if attributed:
            st, bound = r.get("attn1_s", {}), r.get("bound_ratio")
            row += "".join(f" {st[k]:.2f} |" if k in st else " |" for k in ("projections", "sdpa", "attn1 other"))
            row += f" {bound:.2f}× |" if bound is not None else " |"
        lines.append(row + f" {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines)


def _load_avg():
    """The machine's 1/5/15-minute load averages when the run ends (how busy the cores were)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    return torch.device(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="512² only, 1 repetition")
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 1024],
                    help="sizes of the UNet table (none: skip it, e.g. to run only the guidance cases)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", nargs="+", help="case names to run (the baselines and the ceiling always run)")
    ap.add_argument("--sag-sizes", type=int, nargs="*", default=[512], help="sizes of the SAG CFG-step cases")
    ap.add_argument("--guidance-sizes", type=int, nargs="*", default=[],
                    help="sizes of the guidance CFG-step cases (PAG / SEG batched and separate, SAG and its "
                         "window); none by default")
    ap.add_argument("--maps-sizes", type=int, nargs="*", default=[],
                    help="sizes of the 'Show Sloth maps' recording cases (maps off vs on); none by default")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto = cuda when available; cuda runs fp16, cpu fp32")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                    help="what the ratios use: wall clock, or the process's CPU time (a busy shared machine, 1 thread)")
    ap.add_argument("--substrate", choices=("ldm", "diffusers"), default="ldm",
                    help="the UNet the cases run on: ldm's UNetModel, or diffusers' UNet2DConditionModel "
                         "(lib_sloth.diffusers; needs diffusers installed)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the UNet table: where each method's time goes on one layer (lib_sloth.bench_profile)")
    args = ap.parse_args(argv)
    sizes, reps = ([512], 1) if args.quick else (args.sizes, args.reps)
    device = pick_device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, sizes {sizes}, reps {reps}, "
        f"timer {args.timer}, load {_load_avg()}")
    if args.profile:
        from .bench_profile import profile_report

        report = profile_report(max(sizes), reps, device, dtype, only=args.only,
                                sag_size=(args.sag_sizes or [512])[0], timer=args.timer)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return report
    substrate = _substrate(args.substrate)
    cases = substrate.default_cases()
    if args.only:
        cases = [c for c in cases if c.role != "case" or c.name in args.only]
    unet = substrate.build_unet(device, dtype)
    kw = dict(timer=args.timer, substrate=args.substrate)
    results = run(sizes, reps, cases, device, dtype, log, unet, **kw) if sizes else []
    if args.sag_sizes and (not args.only or "sag" in args.only):
        results += run(args.sag_sizes, reps, substrate.sag_cases(), device, dtype, log, unet, **kw)
    if args.guidance_sizes and args.substrate == "ldm":
        guided = [c for c in guidance_cases() if c.role != "case" or not args.only or c.name in args.only]
        results += run(args.guidance_sizes, reps, guided, device, dtype, log, unet, **kw)
    for group in maps_cases() if args.maps_sizes and args.substrate == "ldm" else ():
        results += run(args.maps_sizes, reps, group, device, dtype, log, unet, **kw)
    report = {"substrate": args.substrate, "device": str(device) + ("" if device.type == "cuda" else f" ({os.cpu_count()} cores)"),
              "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "timer": args.timer, "load_avg": _load_avg(), "cases": results, **summary(results),
              "sag_map_mb_1024": round(sag_map_mb(unet, 1024, getattr(substrate, "find_self_attention", None)), 3)}
    print(table(results))
    for key, n in report["noise"].items():
        print(f"noise {key}: baseline {n['baseline_s']:.3f}s, repeat {n['repeat_s']:.3f}s -> {100 * n['noise']:.1f} %")
    print(f"SAG map at 1024 px (one uncond image): {report['sag_map_mb_1024']} MB")
    print(f"substrate: {args.substrate}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


def _substrate(name: str):
    """The case builders of a substrate: build_unet, default_cases, sag_cases (and
    find_self_attention when its layers are not ldm's). "ldm" is this module's own; any other name
    is an adapter package that ships `lib_sloth/<name>/bench_cases.py`, looked up by name so the
    tools layer never imports an adapter (tests/test_imports.py)."""
    if name == "ldm":
        return sys.modules[__name__]
    import importlib

    return importlib.import_module(f"{__package__}.{name}.bench_cases")


if __name__ == "__main__":
    main()
