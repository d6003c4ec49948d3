"""AUTOMATIC1111 adapter: one sampling pass = one wrapped CFG denoiser.

`attach` wraps, per instance, the pass's `p.sampler.model_wrap_cfg` (a fresh CFGDenoiser per
pass, so the wrappers die with it): its `forward` enters the engine's SlothPatch with the pass's
real step and total (`StepClock`); with guidance methods on (lib_sloth.guidance: SAG, ...) its
inner model arms their recording on exactly the uncond rows of each UNet call and its
`combine_denoised` adds each guidance's term. Everything of one denoiser call lives on a
`DenoiserCall`, dropped when the call ends. Row layout and timestep denoisers: docs/design.md.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from .. import methods
from ..guidance import GuidedStep
from ..patch import SlothPatch
from ..prediction import NoiseSpace
from .backend import Backend, NothingPatched, PassNotes
from .clock import StepClock
from .job import job_of


class A1111Backend(Backend):
    name = "AUTOMATIC1111"

    def attach(self, p, settings, seed: int):
        sd_model = p.sd_model
        job = job_of(p)
        if getattr(sd_model, "is_sd3", False):
            return NothingPatched(["Sloth does nothing on SD3 (an MMDiT has no UNet self-attention); skipped"])
        if getattr(p, "sampler", None) is None or job.defer_first_pass:
            # A1111 1.7-1.9 txt2img: the first pass's sampler does not exist yet at process_batch;
            # attach_deferred (from the cfg_denoiser callback) attaches at its first denoiser call
            pending = PassNotes()
            job.deferred = (settings, seed, pending)
            return pending
        denoiser = p.sampler.model_wrap_cfg
        return A1111Pass(denoiser, sd_model.model.diffusion_model, settings, seed, StepClock(p.sampler, p.steps),
                         recorder=job.recorder)  # "Show Sloth maps" (hooks.attach_pass)


def attach_deferred(denoiser) -> None:
    """cfg_denoiser callback for A1111 1.7-1.9: attach a deferred first pass to its denoiser.

    The call that fires the callback is already under way, so it runs without Sloth; every
    later call of the pass has it. The WebUI sets `denoiser.p` when the sampler initialises.
    """
    p = getattr(denoiser, "p", None)
    job = job_of(p)
    if job.deferred is None or getattr(denoiser, "sloth_pass", None) is not None:
        return
    settings, seed, pending = job.deferred
    job.deferred, job.defer_first_pass = None, False
    sloth_pass = A1111Pass(denoiser, p.sd_model.model.diffusion_model, settings, seed,
                           StepClock(p.sampler, p.steps), recorder=job.recorder)
    notes = pending.notes  # the list the Script already holds
    notes.append("A1111 before 1.10 has no hook before sampling: the first denoiser call of this pass "
                 "ran without Sloth")
    notes.extend(sloth_pass.notes)
    sloth_pass.notes = sloth_pass.patch.notes = notes


class A1111Pass:
    """Everything of one sampling pass; lives on the pass's CFGDenoiser instance."""

    nothing_patched = False

    def __init__(self, denoiser, unet, settings, seed: int, clock: StepClock, recorder=None):
        earlier = getattr(denoiser, "sloth_pass", None)
        if earlier is not None:  # img2img reuses one sampler for every batch: replace, never nest
            earlier.detach()
        self._wrapped: List[tuple] = []  # (object, attribute) of every instance wrapper we set
        self.denoiser = denoiser
        self.clock = clock
        # "Upcast cross attention layer to float32"; hypernetworks transform what K and V see
        self.patch = SlothPatch(unet, settings, seed, kv_source=_hypernetwork_source(), upcast_for=_upcast_attn,
                                recorder=recorder)
        self.guidances = self.patch.guidances  # lib_sloth.guidance objects of this pass
        self.notes = self.patch.notes  # grows while sampling; the Script reads it afterwards
        denoiser.sloth_pass = self  # for inspection; dies with the pass's denoiser
        self._call: Optional[DenoiserCall] = None  # the denoiser call under way (SAG only); None between calls
        self._inner = None  # the inner model we wrapped (the WebUI may replace it mid-pass)
        self._inner_forward = None
        self._wrap_forward()
        self._wrap_update_inner_model()
        if self.guidances:
            self._wrap_combine()

    # ---- per denoiser call ------------------------------------------------------------------
    def _wrap_forward(self) -> None:
        original = self.denoiser.forward

        def forward(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
            self.patch.set_step(*self.clock.now(sigma))
            if self.guidances and not self._edit_model():
                self._call = DenoiserCall(x, sigma, self._rows_in(x, cond))
                self._wrap_inner()
            try:
                with self.patch:
                    return original(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
            finally:
                self._call = None  # nothing of this call (its latent, its conds) outlives it
                for guidance in self.guidances:
                    guidance.disarm()

        self._set(self.denoiser, "forward", forward)  # instance attribute: gone with the denoiser

    def _wrap_update_inner_model(self) -> None:
        """The refiner switch (sd_samplers_common.apply_refiner, called at the top of the CFG
        denoiser's forward) loads the refiner -- for SDXL a new model with a new UNet -- and then calls
        `update_inner_model`: follow it there, before the call's first UNet call."""
        original = getattr(self.denoiser, "update_inner_model", None)
        if original is None:
            return

        def update_inner_model(*args, **kwargs):
            result = original(*args, **kwargs)
            self._follow_model()
            return result

        self._set(self.denoiser, "update_inner_model", update_inner_model)

    def _follow_model(self) -> None:
        model = getattr(getattr(self.denoiser, "inner_model", None), "inner_model", None)
        unet = getattr(getattr(model, "model", None), "diffusion_model", None)
        if unet is None:
            self.patch.note("Refiner: the refiner is not a UNet model; it ran without Sloth")
            self.patch.retarget(_NoUNet())
            return
        if not self.patch.retarget(unet):
            return
        if self._call is not None:
            self._wrap_inner()  # SAG arms the refiner's inner model from this call on
        if self.patch.installed:
            self.patch.note(f"Refiner: its UNet was patched too, with the same settings "
                            f"({len(self.patch.layers)} self-attention layers)")
        else:
            self.patch.note("Refiner: its UNet has no self-attention layers Sloth can rewrite; it ran without Sloth")

    def _edit_model(self) -> bool:
        """InstructPix2Pix-style edit models lay a call out as cond + 2B rows (text-uncond with and
        without the image) and combine them in combine_denoised_for_edit_model, which guidance does
        not support: it is skipped, with nothing recorded. Same test as CFGDenoiser.forward's is_edit_model."""
        from modules import shared

        scale = getattr(self.denoiser, "image_cfg_scale", None)
        edit = getattr(shared.sd_model, "cond_stage_key", None) == "edit" and scale is not None and scale != 1.0
        if edit:
            names = " and ".join(methods.method_of(g).short for g in self.guidances)
            self.patch.note(f"{names} skipped: edit models (InstructPix2Pix) combine cond, image and uncond rows in "
                            f"a way guidance does not support; set Image CFG scale to 1 to use {names} with them")
        return edit

    def _rows_in(self, x, cond) -> int:
        """Rows of the full cond + uncond batch this call lays out (AND prompts add cond rows)."""
        from modules import prompt_parser  # the WebUI's own layout of cond rows

        _, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.denoiser.step)
        cond_rows = tensor["crossattn"].shape[0] if isinstance(tensor, dict) else tensor.shape[0]
        return cond_rows + x.shape[0]

    # ---- guidance ---------------------------------------------------------------------------------
    def _wrap_inner(self) -> None:
        """Arm the guidances' recording on the uncond rows of each UNet call (inner model made lazily)."""
        inner = self.denoiser.inner_model
        if inner is self._inner:
            return
        original = inner.forward
        self._inner, self._inner_forward = inner, original

        def forward(x_in, sigma_in, **kwargs):
            call = self._call
            if call is None:
                return original(x_in, sigma_in, **kwargs)
            rows = call.uncond_rows_of_next(x_in.shape[0])
            recording = [g for g in self.guidances if g.records] if rows else []
            for guidance in recording:
                guidance.arm(rows)
            if rows:
                if len(rows) == call.uncond:
                    call.uncond_cond = _take_rows(kwargs.get("cond"), rows)
                    # what the model really saw: DDIM / PLMS / UniPC blend the inpainting mask into x
                    # before denoising (mask_before_denoising), and cfg_denoiser callbacks may replace x
                    call.uncond_x, call.uncond_sigma = x_in[rows], sigma_in[rows]
            try:
                return original(x_in, sigma_in, **kwargs)
            finally:
                for guidance in recording:
                    guidance.stop_recording()  # keep what was recorded; record no other call

        self._set(inner, "forward", forward)

    def _wrap_combine(self) -> None:
        original = self.denoiser.combine_denoised

        def combine_denoised(x_out, conds_list, uncond, cond_scale):
            cfg = original(x_out, conds_list, uncond, cond_scale)
            call = self._call
            if call is None:
                return cfg
            n = uncond.shape[0] if not isinstance(uncond, dict) else uncond["crossattn"].shape[0]
            real = call.uncond_cond is not None and x_out.shape[0] == call.total
            x, sigma = call.x, call.sigma
            if call.uncond_x is not None:
                x, sigma = call.uncond_x, call.uncond_sigma
            inner = self._inner_forward
            cond_dict = call.uncond_cond

            def call_model(which, x_in):
                if which != "uncond":
                    raise ValueError(f"A1111: an extra UNet call with the {which!r} conditioning is not available")
                return inner(x_in, sigma, cond=cond_dict)

            kind, space = self._prediction_space(sigma, x)
            step = GuidedStep(x, x_out[-n:] if real else None, None, call_model, space, kind)
            for guidance in self.guidances:
                cfg = guidance.guide(cfg, step)
            return cfg

        self._set(self.denoiser, "combine_denoised", combine_denoised)

    def _set(self, obj, name: str, wrapper) -> None:
        obj.__dict__[name] = wrapper
        self._wrapped.append((obj, name, wrapper))

    def detach(self) -> None:
        """Take this pass's wrappers off the denoiser (the class methods show through again)."""
        for obj, name, wrapper in reversed(self._wrapped):
            if obj.__dict__.get(name) is wrapper:
                del obj.__dict__[name]
        self._wrapped.clear()
        if getattr(self.denoiser, "sloth_pass", None) is self:
            self.denoiser.sloth_pass = None

    def _prediction_space(self, sigma, x):
        """k-diffusion denoisers return x0 in sigma space; timestep ones eps with integer t."""
        alphas = getattr(self.denoiser, "alphas", None)
        if alphas is None:
            return "x0", None
        return "eps", NoiseSpace.from_alphas_cumprod(alphas, sigma, like=x)


def _upcast_attn(module) -> bool:
    """A1111's own precision choice: its attention forwards upcast q/k/v when opts.upcast_attn
    (modules/sd_hijack_optimizations.py, every *_attention_forward)."""
    from modules import shared

    return bool(getattr(shared.opts, "upcast_attn", False))


def _hypernetwork_source():
    """What A1111's attention forwards compute K and V from: the context passed through the loaded
    hypernetworks (`hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)` in
    modules/sd_hijack_optimizations.py); x itself when none is loaded. Read at every call, because
    extra networks (re)load them per batch."""
    try:
        from modules import shared
        from modules.hypernetworks import hypernetwork
    except ImportError:
        return None

    def source(x):
        loaded = getattr(shared, "loaded_hypernetworks", None)
        if not loaded:
            return x, x
        return hypernetwork.apply_hypernetworks(loaded, x)

    return source


class _NoUNet(torch.nn.Module):
    """Stands for a model without a UNet: indexing it finds no layers, so nothing is patched."""


class DenoiserCall:
    """The state of one CFG denoiser call, for SAG: created when the call starts, dropped when it ends.

    x [B, C, H, W] and sigma are the call's latent and sigmas (B = its uncond rows, one per image);
    total: rows of the full layout (cond rows + B uncond rows, the uncond rows last); `offset`
    tracks where the next UNet call of this denoiser call starts in that layout.
    """

    def __init__(self, x: torch.Tensor, sigma, total: int):
        self.x, self.sigma = x, sigma
        self.total = total
        self.uncond = x.shape[0]
        self.offset = 0
        self.uncond_cond = None  # the uncond rows' conditioning, once one UNet call held all of them
        self.uncond_x = self.uncond_sigma = None  # and their model input and noise level

    def uncond_rows_of_next(self, rows: int) -> List[int]:
        start, self.offset = self.offset, self.offset + rows
        first = self.total - self.uncond
        return [r - start for r in range(max(start, first), min(start + rows, self.total))]


def _take_rows(value, rows: List[int]):
    """The same conditioning (tensor, list of tensors or dict of them) restricted to `rows`."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, (list, tuple)):
        return type(value)(_take_rows(v, rows) for v in value)
    if isinstance(value, dict):
        return {k: _take_rows(v, rows) for k, v in value.items()}
    return value
