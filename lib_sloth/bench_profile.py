"""`python -m lib_sloth.bench --profile`: where each method's attention time goes on one layer.

The engine carries no timers. For the duration of a profile this module wraps, from outside,
the names the kernels call (projections, SDPA, pooling, tile copies, matching, merge/unmerge,
SAG's map capture and blur) with stage timers and puts every name back afterwards; outside a
profile nothing is wrapped, so the timers cost nothing. Times are exclusive: a stage inside
another is charged to itself only, and whatever no stage covers (reshapes, cat, expand, the
runner's glue) is "other", so the stages of a layer add up to its total.

The layer is the first self-attention of the input blocks (the largest grid, where every
method acts), called with batch 2 like one CFG step. Its unpatched time is the most any
rewrite of it can remove (the ceiling makes it 0).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F

from . import methods, tome
from .attention import attend
from .bench_cases import TOTAL_STEPS, build_unet, case_step, cfg_step, sag_cases, sdp_attention, sloth_cases
from .layer_call import LayerCall, TokenGrid
from .settings import settings_from_dict

STAGES = ("projections", "sdpa", "pooling", "tiling copies", "matching", "merge/unmerge",
          "sag map capture", "sag mask + blur", "other")


class StageClock:
    """Exclusive time per stage: entering a stage pauses the one it is nested in."""

    def __init__(self, device: torch.device, timer: str = "wall"):
        self.device = device
        self.totals: Dict[str, float] = {}
        self._stack: List[List] = []  # [name, time of the last resume]
        self._clock = time.process_time if timer == "cpu" else time.perf_counter

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self._clock()

    def push(self, name: str) -> None:
        now = self._now()
        if self._stack:
            parent = self._stack[-1]
            self.totals[parent[0]] = self.totals.get(parent[0], 0.0) + now - parent[1]
        self._stack.append([name, now])

    def pop(self) -> None:
        now = self._now()
        name, since = self._stack.pop()
        self.totals[name] = self.totals.get(name, 0.0) + now - since
        if self._stack:
            self._stack[-1][1] = now

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args, **kwargs):
            with self.stage(name):
                return fn(*args, **kwargs)

        timed.__wrapped__ = fn
        return timed


@contextlib.contextmanager
def _replaced(owner, attr: str, value) -> Iterator[None]:
    saved = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, saved)


def _method_stages(guidance: bool) -> list:
    """(owner, attribute, stage) of the kernels the per-layer (or guidance) methods declare, each once."""
    found = {}
    for m in methods.all_methods():
        if (m.guidance is not None) == guidance:
            module = methods.kernel_module(m)
            for name, stage in m.profile_stages:
                found.setdefault((module.__name__, name), (module, name, stage))
    return list(found.values())


def layer_names():
    """(owner, attribute, stage) of every engine step a layer profile times."""
    return [(F, "scaled_dot_product_attention", "sdpa"), *_method_stages(guidance=False)]


def sag_names():
    """The same for a guided CFG step: what the guidance methods' own kernels cost."""
    return _method_stages(guidance=True)


def _stage_hooks(module: torch.nn.Module, clock: StageClock, name: str) -> list:
    """Hooks making every call of `module` the stage `name`; the caller removes the handles."""
    return [module.register_forward_pre_hook(lambda m, a: clock.push(name)),
            module.register_forward_hook(lambda m, a, o: clock.pop())]


@contextlib.contextmanager
def instrumented(clock: StageClock, layer: Optional[torch.nn.Module], names) -> Iterator[None]:
    """Stage timers around `names` (and `layer`'s projections, and ToMe's merge/unmerge, when a
    layer is given) while the block runs; everything is put back on exit."""
    w = clock.wrap
    original_merging = tome.Matching.merging

    def merging(self, r):
        merge, unmerge = original_merging(self, r)
        return w(merge, "merge/unmerge"), w(unmerge, "merge/unmerge")

    handles = []
    for proj in (layer.to_q, layer.to_k, layer.to_v, layer.to_out) if layer is not None else ():
        handles += _stage_hooks(proj, clock, "projections")
    with contextlib.ExitStack() as stack:
        try:
            for owner, attr, stage in names:
                if hasattr(owner, attr):  # a module refactored away from a name simply loses its timer
                    stack.enter_context(_replaced(owner, attr, w(getattr(owner, attr), stage)))
            if layer is not None:
                stack.enter_context(_replaced(tome.Matching, "merging", merging))
            yield
        finally:
            for h in handles:
                h.remove()


ATTN1_STAGES = ("projections", "sdpa", "attn1 other")


@contextlib.contextmanager
def attn1_stages(unet: torch.nn.Module, clock: StageClock) -> Iterator[Dict[str, float]]:
    """Time every self-attention call (attn1) of `unet` by stage while the block runs: its four
    projections, SDPA, and the rest of the call ("attn1 other": pooling, tile copies, matching,
    merge/unmerge, glue). Yields the clock's totals (seconds, exclusive). Nothing outside attn1 is
    timed (cross-attention calls the same SDPA, but outside any attn1 stage). Hooks and the SDPA
    wrapper are removed on exit, whatever happens. A few clock reads per call: cheap next to a
    layer's milliseconds, so the bench keeps it on for its timed CPU runs."""
    from .layers import find_self_attention

    layers = list(find_self_attention(unet))
    sdpa = F.scaled_dot_product_attention

    def timed_sdpa(*args, **kwargs):
        if not clock._stack:  # not inside attn1 (cross-attention): untimed
            return sdpa(*args, **kwargs)
        with clock.stage("sdpa"):
            return sdpa(*args, **kwargs)

    handles = []
    for layer in layers:
        handles += _stage_hooks(layer, clock, "attn1 other")
        for proj in (layer.to_q, layer.to_k, layer.to_v, layer.to_out):
            handles += _stage_hooks(proj, clock, "projections")
    try:
        with _replaced(F, "scaled_dot_product_attention", timed_sdpa):
            yield clock.totals
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _timed_calls(unet: torch.nn.Module, clock: StageClock) -> Iterator[None]:
    """Each UNet call is a stage named by its batch size (hooks, so the forward stays the module's)."""
    pre = unet.register_forward_pre_hook(lambda m, a: clock.push(f"unet call, batch {a[0].shape[0]}"))
    post = unet.register_forward_hook(lambda m, a, o: clock.pop())
    try:
        yield
    finally:
        pre.remove()
        post.remove()


def first_input_layer(unet: torch.nn.Module):
    from .layers import find_self_attention

    return next(m for m, info in find_self_attention(unet).items() if info.block == "input")


def layer_runners(layer, h: int, w: int, only: Optional[List[str]] = None) -> Dict[str, Callable]:
    """name -> fn(x) giving the layer's output (after to_out), for the unpatched SDPA call and every
    Sloth case of the bench at its step (the same runner the patch would choose)."""
    runners: Dict[str, Callable] = {
        "unpatched": lambda x: layer.to_out(attend(layer.to_q(x), layer.to_k(x), layer.to_v(x), layer.heads))}
    for case in sloth_cases():
        if only and case.name not in only:
            continue
        call = LayerCall("input", TokenGrid(h, w, 0), 2, case_step(case.progress), TOTAL_STEPS, 1)
        plan = methods.plan_layer(settings_from_dict(dict(case.settings)), call)
        if plan is not None:
            runners[case.name] = lambda x, p=plan: p.run(layer, x, x, x, False)
    return runners


def profile_layer(layer, x: torch.Tensor, runners: Dict[str, Callable], reps: int, device,
                  timer: str = "wall") -> Dict[str, dict]:
    """Per runner: total_s (median) and the median exclusive seconds of every stage."""
    out = {}
    with torch.no_grad():
        for fn in runners.values():  # warm-up, untimed
            fn(x)
        samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in runners}
        for rep in range(reps):
            order = list(runners.items()) if rep % 2 == 0 else list(reversed(runners.items()))
            for name, fn in order:
                clock = StageClock(device, timer)
                with instrumented(clock, layer, layer_names()):
                    with clock.stage("other"):
                        fn(x)
                samples[name].append(dict(clock.totals))
    for name, runs in samples.items():
        stages = {s: statistics.median(r.get(s, 0.0) for r in runs) for s in STAGES}
        total = statistics.median(sum(r.values()) for r in runs)
        out[name] = {"total_s": round(total, 4), "stages_s": {s: round(v, 4) for s, v in stages.items() if v > 0}}
    return out


def profile_sag(unet, size: int, reps: int, device, dtype, timer: str = "wall") -> Dict[str, dict]:
    """One CFG step with SAG, by stage: the batch-2 call (with the map capture inside it), the
    mask + blur, and the extra batch-1 call; next to a plain CFG step."""
    plain, with_sag = sag_cases()[:2]
    lat = size // 8
    g = torch.Generator().manual_seed(size)
    x = torch.randn(2, 4, lat, lat, generator=g).to(device, dtype)
    t = torch.tensor([500, 500], device=device)
    ctx = torch.randn(2, 77, 768, generator=g).to(device, dtype)
    samples: Dict[str, List[Dict[str, float]]] = {"cfg step": [], "cfg step + SAG": []}
    with torch.no_grad(), sdp_attention():
        for rep in range(reps + 1):  # the first repetition warms up
            for case in (plain, with_sag):
                clock = StageClock(device, timer)
                with case.enter(unet) as handle, instrumented(clock, None, sag_names()), \
                        _timed_calls(unet, clock):
                    with clock.stage("other"):
                        cfg_step(unet, x, t, ctx, handle)
                if rep:
                    samples[case.name].append(dict(clock.totals))
    out = {}
    keys = ["unet call, batch 2", "unet call, batch 1", "sag map capture", "sag mask + blur", "other"]
    for name, runs in samples.items():
        total = statistics.median(sum(r.values()) for r in runs)
        out[name] = {"total_s": round(total, 4),
                     "stages_s": {k: round(statistics.median(r.get(k, 0.0) for r in runs), 4)
                                  for k in keys if any(k in r for r in runs)}}
    return out


def profile_report(size: int, reps: int, device, dtype, only=None, unet=None, sag_size: int = 512,
                   timer: str = "wall") -> dict:
    """Profile the first input layer at `size` and (unless `only` leaves out "sag") a SAG CFG step
    at `sag_size`; prints both tables and returns them as plain data."""
    unet = unet or build_unet(device, dtype)
    layer = first_input_layer(unet)
    h = w = size // 8
    g = torch.Generator().manual_seed(size)
    x = torch.randn(2, h * w, layer.to_q.in_features, generator=g).to(device, dtype)
    layers = profile_layer(layer, x, layer_runners(layer, h, w, only), reps, device, timer)
    report = {"timer": timer, "layer": {"size": size, "tokens": h * w, "channels": layer.to_q.in_features,
                                        "batch": 2, "cases": layers}}
    print(format_layer_profile(report["layer"]))
    if not only or "sag" in only:
        report["sag"] = {"size": sag_size, "cases": profile_sag(unet, sag_size, reps, device, dtype, timer)}
        print(format_sag_profile(report["sag"]))
    return report


def format_layer_profile(layer: dict) -> str:
    cases = layer["cases"]
    base = cases["unpatched"]["total_s"]
    lines = [f"First input-block attn1 at {layer['size']}² ({layer['tokens']} tokens x {layer['channels']}, "
             f"batch {layer['batch']}), ms; share = part of the unpatched layer time removed",
             "| case | total | share | " + " | ".join(s for s in STAGES[:6]) + " | other |",
             "|---|---:|---:|" + "---:|" * 7]
    for name, c in cases.items():
        st = c["stages_s"]
        share = (base - c["total_s"]) / base if base > 0 else 0.0
        cells = " | ".join(f"{1000 * st.get(s, 0.0):.0f}" for s in STAGES[:6] + ("other",))
        lines.append(f"| {name} | {1000 * c['total_s']:.0f} | {100 * share:.0f} % | {cells} |")
    return "\n".join(lines)


def format_sag_profile(sag_report: dict) -> str:
    lines = [f"One CFG step at {sag_report['size']}², ms"]
    for name, c in sag_report["cases"].items():
        parts = ", ".join(f"{k} {1000 * v:.0f}" for k, v in c["stages_s"].items())
        lines.append(f"- {name}: total {1000 * c['total_s']:.0f} ({parts})")
    cases = sag_report["cases"]
    plain = cases["cfg step"]["total_s"]
    if plain > 0:
        extra = cases["cfg step + SAG"]["stages_s"].get("unet call, batch 1", 0.0)
        lines.append(f"- SAG / plain: {cases['cfg step + SAG']['total_s'] / plain:.2f}x; "
                     f"the batch-1 call alone is {extra / plain:.2f} of a plain step")
    return "\n".join(lines)
