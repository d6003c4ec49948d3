"""What the benchmark times: the cases (baseline, ceiling, Sloth methods, tomesd, the baseline
again), the guided CFG step, the benchmark UNet and the SDPA forward it runs. Shared by
lib_sloth.bench (the timed table) and lib_sloth.bench_profile (the per-stage profile).
Every method's rows come from its table entry (`methods.bench_cases`): a per-layer method is
timed on one UNet forward, a guidance method on a CFG step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, List

import torch

from . import methods
from .guidance import GuidedStep
from .patch import SlothPatch
from .prediction import NoiseSpace
from .settings import settings_from_dict

TOTAL_STEPS = 20


def unet_forward(unet, x, t, ctx, handle):
    unet(x, t, ctx)


@dataclass
class Case:
    name: str
    enter: Callable[[torch.nn.Module], ContextManager]  # context around one timed run
    run: Callable = unet_forward  # (unet, x, t, ctx, what enter yielded) -> None
    role: str = "case"  # "baseline" (the first case), "ceiling", "repeat" (the baseline again) or "case"


def unpatched_case(name: str = "unpatched", role: str = "baseline") -> Case:
    return Case(name, lambda unet: contextlib.nullcontext(), role=role)


@contextlib.contextmanager
def free_self_attention(unet: torch.nn.Module):
    """Every self-attention layer (attn1) of `unet` returns zeros shaped like its input (attn1
    maps query_dim to query_dim) without computing anything; cross-attention, convolutions and
    MLPs run unchanged. Instance forwards are set and removed again on exit, whatever happens."""
    from .layers import find_self_attention

    layers = list(find_self_attention(unet))
    saved = [m.__dict__.get("forward", _NO_FORWARD) for m in layers]

    def free(x, *args, **kwargs):
        return torch.zeros_like(x)

    try:
        for m in layers:
            m.forward = free
        yield
    finally:
        for m, f in zip(layers, saved):
            if f is _NO_FORWARD:
                m.__dict__.pop("forward", None)
            else:
                m.forward = f


_NO_FORWARD = object()


def ceiling_case(free=None) -> Case:
    """free(unet): the context that makes every attn1 free (default: ldm's, `free_self_attention`)."""
    return Case("ceiling (attn1 free)", free or free_self_attention, role="ceiling")


# ---- guidance: one CFG step (cond + uncond rows, eps model) with and without it ----------------
CFG_SCALE = 7.0


def sd15_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


@dataclass
class GuidedRun:
    """One timed run of a guided CFG step: its patch, and the bytes of the maps it recorded."""

    patch: SlothPatch
    map_bytes: int = 0


def cfg_step(unet, x, t, ctx, run: "GuidedRun | None"):
    """Rows [cond, uncond] of one image; every guidance of the run's patch (None = none) records on
    the uncond row and adds its term, each with its extra batch-1 call."""
    guidances = run.patch.guidances if run is not None else []
    for g in guidances:
        if g.records:
            g.arm(slice(-1, None))
    out = unet(x, t, ctx)
    cond, uncond = out[:1], out[1:]
    cfg = uncond + CFG_SCALE * (cond - uncond)
    if guidances:
        run.map_bytes = sum(getattr(getattr(g, "recorded", None), "nbytes", 0) for g in guidances)
        space = NoiseSpace.from_alphas_cumprod(sd15_alphas_cumprod(), t[1:], like=x[1:])

        def call_model(which, xd):
            rows = slice(1, None) if which == "uncond" else slice(0, 1)
            return unet(xd, t[rows], ctx[rows])

        step = GuidedStep(x[1:], uncond, cond, call_model, space, "eps")
        for g in guidances:
            cfg = g.guide(cfg, step)
    return cfg


def guided_case(name: str, data: dict) -> Case:
    settings = settings_from_dict(data)

    @contextlib.contextmanager
    def enter(unet):
        patch = SlothPatch(unet, settings, seed=1)
        with patch:
            patch.set_step(0, TOTAL_STEPS)
            yield GuidedRun(patch)

    return Case(name, enter, cfg_step)


def sag_cases(case_for=None, step=None) -> List[Case]:
    """A plain CFG step, each guidance method's rows, the plain step again (the run's noise).
    Another UNet substrate passes its guided-case builder (name, settings dict) -> Case and its step."""
    case_for, step = case_for or guided_case, step or cfg_step
    guided = [case_for(c.name, dict(c.settings)) for m in methods.all_methods() if m.guidance is not None
              for c in methods.bench_cases(m)]
    return [Case("cfg step", lambda unet: contextlib.nullcontext(), step, role="baseline"), *guided,
            Case("cfg step (repeat)", lambda unet: contextlib.nullcontext(), step, role="repeat")]


# ---- PAG and SEG: a CFG step with the perturbed pass batched or separate; SAG outside its window ----
def batched_cfg_step(unet, x, t, ctx, run: GuidedRun):
    """cfg_step with the batching guidances' perturbed rows in the CFG call itself: rows [cond, uncond]
    of one image plus one copy of the cond row per batching guidance (PAG, SEG), each perturbed by its
    own guidance; the other guidances as in cfg_step."""
    guidances = run.patch.guidances
    batching = [g for g in guidances if g.batches and g.batched_now()]
    k = len(batching)
    with contextlib.ExitStack() as stack:
        for i, g in enumerate(batching):
            stack.enter_context(g.perturbing([2 + i]))
        out = unet(torch.cat([x, *[x[:1]] * k]), torch.cat([t, *[t[:1]] * k]), torch.cat([ctx, *[ctx[:1]] * k]))
    cond, uncond = out[:1], out[1:2]
    cfg = uncond + CFG_SCALE * (cond - uncond)
    space = NoiseSpace.from_alphas_cumprod(sd15_alphas_cumprod(), t[:1], like=x[:1])

    def call_model(which, xd):
        rows = slice(1, 2) if which == "uncond" else slice(0, 1)
        return unet(xd, t[rows], ctx[rows])

    step = GuidedStep(x[:1], uncond, cond, call_model, space, "eps", {g: out[2 + i:3 + i] for i, g in enumerate(batching)})
    for g in guidances:
        cfg = g.guide(cfg, step)
    return cfg


def guidance_cases() -> List[Case]:
    """The CFG step alone; with PAG and with SEG (their defaults: the middle block, scale 3; SEG's infinite
    blur), batched into the CFG call and as a separate call; with SAG; with SAG at a step outside its
    0-0.5 window (no extra call); then the CFG step again."""

    def guided(data: dict, step: int = 0):
        settings = settings_from_dict(data)

        @contextlib.contextmanager
        def enter(unet):
            patch = SlothPatch(unet, settings, seed=1)
            with patch:
                patch.set_step(step, TOTAL_STEPS)
                yield GuidedRun(patch)

        return enter

    plain = lambda unet: contextlib.nullcontext()  # noqa: E731
    pag, seg, sag = {"pag.enabled": True}, {"seg.enabled": True}, {"sag.enabled": True}
    return [Case("cfg step", plain, cfg_step, role="baseline"),
            Case("cfg step + PAG (batched)", guided(pag), batched_cfg_step),
            Case("cfg step + PAG (separate)", guided(pag), cfg_step),
            Case("cfg step + SEG (batched)", guided(seg), batched_cfg_step),
            Case("cfg step + SEG (separate)", guided(seg), cfg_step),
            Case("cfg step + SAG", guided(sag), cfg_step),
            Case("cfg step + SAG, step outside its 0-0.5 window", guided({**sag, "sag.end": 0.5}, TOTAL_STEPS - 5),
                 cfg_step),
            Case("cfg step (repeat)", plain, cfg_step, role="repeat")]


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
            patch = SlothPatch(unet, settings, seed=1, recorder=MapRecorder(settings, 1) if record else None)
            with patch:
                patch.set_step(_peak_step(0.4), TOTAL_STEPS)
                yield GuidedRun(patch)

        return enter

    nsa = {"nearsighted.enabled": True}
    sag = {"slothful.enabled": True, "sag.enabled": True}
    return [[Case("maps off: nearsighted attention", patched(nsa, False)),
             Case("maps on: nearsighted attention", patched(nsa, True))],
            [Case("maps off: cfg step + slothful + SAG", patched(sag, False), cfg_step),
             Case("maps on: cfg step + slothful + SAG", patched(sag, True), cfg_step)]]


def _peak_step(progress: float) -> int:
    return round(progress * (TOTAL_STEPS - 1))


def sloth_case(name: str, data: dict, progress: float = 0.4, patch=SlothPatch) -> Case:
    """A method at the step nearest `progress`: `patch(unet, settings, seed=)` is the context that
    applies it and has set_step (SlothPatch; lib_sloth.diffusers.apply on the diffusers UNet)."""
    settings = settings_from_dict(data)

    @contextlib.contextmanager
    def enter(unet):
        with patch(unet, settings, seed=1) as patched:
            patched.set_step(_peak_step(progress), TOTAL_STEPS)
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


def sloth_cases() -> List[methods.BenchCase]:
    """Every per-layer method's bench rows, in the table's order: the Sloth rows of the table and of --profile."""
    return [c for m in methods.all_methods() if m.plan is not None for c in methods.bench_cases(m)]


def case_step(progress: float) -> int:
    """The step a bench row is timed at."""
    return _peak_step(progress)


def default_cases(patch=SlothPatch, tomesd=None, free=None) -> List[Case]:
    """Baseline, ceiling, every Sloth case, tomesd at AgentSD's two ratios, the baseline again.
    Another UNet substrate passes its patch context, tomesd case builder and ceiling context."""
    tomesd = tomesd or tomesd_case
    cases = [unpatched_case(), ceiling_case(free)]
    cases += [sloth_case(c.name, dict(c.settings), c.progress, patch) for c in sloth_cases()]
    cases += [tomesd(0.4), tomesd(0.5)]
    cases.append(unpatched_case("unpatched (repeat)", role="repeat"))
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
