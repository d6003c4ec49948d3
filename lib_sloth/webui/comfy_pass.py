"""The Comfy-style pass logic shared by the Forge backends (ldm_patched and Forge main's ``backend``).

Both Forge lines keep the UNet in a ComfyUI-style ``UnetPatcher`` at ``p.sd_model.forge_objects.unet``
and reset ``forge_objects`` right before every ``process_before_every_sampling`` (first pass, hires
pass, img2img), so `attach_clone` clones that patcher, registers two plain functions on the clone
and assigns it back. The clone dies with the pass: there is nothing to undo. Everything of the
pass lives on one `ComfyPass` that only those two functions reference.

- A model function wrapper (``set_model_unet_function_wrapper``; the sampler calls it as
  ``wrapper(model.apply_model, {"input", "timestep", "c", "cond_or_uncond"})``) enters the engine's
  SlothPatch around each UNet call, with the pass's real step and step total (`StepClock` on
  ``p.sampler``: both Forge lines use A1111's sampler classes, ``launch_sampling`` sets
  ``model_wrap_cfg.steps`` and the sampler loops call ``callback_state`` once per step). The
  attention class of the UNet's attn1 layers is class-patched only for the duration of the call.
  A wrapper another extension set earlier (MultiDiffusion, ...) is chained inside ours.
- Guidance methods (lib_sloth.guidance: SAG, ...): the wrapper knows each call's ``cond_or_uncond``
  chunks (``b = rows // len(chunks)``) and arms the recording guidances on the first uncond chunk
  only, then stops recording, so calls the sampler splits (memory pressure, conds that cannot be
  concatenated) never mix maps. A post-CFG function (x0 space) applies every guidance; an extra
  UNet call goes through the backend's `Substrate.x0_for`, with the conds stripped of mask/area
  keys and with our wrapper only (a foreign wrapper is dropped for it). Steps whose calls held no
  uncond rows (the CFG 1 optimisation, NGMS / skip early CFG, a pre-CFG function that dropped it)
  have no uncond for the guidances: the sampler then hands a zero tensor as ``uncond_denoised``,
  not None. ``disable_cfg1_optimization`` stays False: SAG does not force an uncond pass at CFG 1
  (Forge main's built-in SAG also refuses CFG <= 1).

Neighbours. The transformer block runs ``attn1_patch`` functions (HyperTile, token merging) before
attn1 and then passes ``context = value = n``; the engine leaves any call with a context to the
original forward. For each call that has such patches, the wrapper appends one more attn1_patch
to that call's own copy of the options: where the tokens reached attn1 unchanged (``context is n
and value is n``) it passes ``None, None``, which the attention treats identically, so Sloth still
rewrites those layers; where another patch changed them (a HyperTile tile, merged tokens) the call
stays theirs and the layer is named in a note. An ``attn1`` replacement (Forge's built-in SAG on
the middle block) takes the layer out of ``self.attn1`` entirely; that is noted too, and a guidance
that needs that layer (`Guidance.needs_layers`: SAG's map) skips rather than guide without it.

Batched perturbed rows (`Guidance.batches`: PAG, SEG). A normal UNet call that holds a cond chunk
gets that chunk's rows appended once per batching guidance (``input``, ``timestep``, every batched
tensor of ``c``, and one more ``COND`` in ``cond_or_uncond``), each guidance perturbing its own
copy, and returns the call's own rows; the copies' predictions reach the post-CFG function in
GuidedStep.batched. Not batched, so each of them makes its own extra call instead: a step whose
calls held several cond chunks (several cond entries, areas), a call under another extension's
wrapper, a recording guidance on (SAG records the middle block in that call), a method whose plans
depend on the batch size (`Method.batch_sensitive`: AgentSD), and conds that do not extend row
by row. Forge's / reForge's built-in PAG perturbs the middle block in its own
extra call; with it on, Sloth's PAG leaves the middle block to it (noted).

Refiner. Both Forge lines switch to the refiner inside sampling and then sample with the refiner's
own fresh patcher; `follow_refiner` patches a clone of it for the same pass (see its docstring).

What differs per backend is injected as a `Substrate` (today only the extra guidance call's module).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

import contextlib

from .. import methods
from ..guidance import GuidedStep
from ..patch import SlothPatch
from .batch_rows import try_appended
from .clock import StepClock
from .job import job_of

# keys of a Comfy-style cond dict that restrict it to part of the latent (get_area_and_mult)
AREA_KEYS = ("mask", "mask_strength", "area", "strength", "set_area_to_bounds")
# p.extra_generation_params keys written by Forge's / reForge's built-in scripts when enabled
BUILTIN_SAG_KEY = "sag_enabled"  # extensions-builtin/sd_forge_sag/scripts/forge_sag.py
BUILTIN_HYPERTILE_KEY = "HyperTile_enabled"  # extensions-builtin/sd_forge_hypertile/scripts/forge_hypertile.py
COND, UNCOND = 0, 1
UNET_PARTS = ("input_blocks", "middle_block", "output_blocks")  # what a non-UNet model (Flux, SD3) lacks


def is_unet(model) -> bool:
    """Whether `model` has the UNet's three block groups (SD1.x/2.x/XL), not a DiT (Flux, SD3)."""
    return all(hasattr(model, part) for part in UNET_PARTS)


def no_uncond_note(guidance) -> str:
    return (f"{methods.method_of(guidance).short} skipped on steps without an uncond pass (CFG scale 1, NGMS / "
            "skip early CFG, or another extension dropped it)")


# (model, conds, x_in, sigma, model_options) -> the x0 prediction for x_in with those conds alone
X0For = Callable[[object, list, torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class Substrate:
    """What one Comfy-style backend does differently from the others."""

    name: str  # for error messages: "Forge (ldm_patched)", "Forge (backend)"
    x0_for: X0For  # a guidance's extra UNet call with one conditioning only
    upcast_for: Optional[Callable] = None  # SlothPatch.upcast_for: the WebUI's own precision choice per layer


def attach_clone(p, settings, seed: int, substrate: Substrate, notes: Sequence[str] = ()) -> "ComfyPass":
    """Clone ``p.sd_model.forge_objects.unet``, patch the clone for this pass, assign it back.

    Idempotent per pass: the WebUI resets ``forge_objects`` before each call, and attaching twice
    to one patcher replaces the earlier pass instead of nesting. Returns the pass (its live notes:
    `notes` first); raises ValueError naming the field when ``p`` is not what this backend knows.
    """
    objects = getattr(getattr(p, "sd_model", None), "forge_objects", None)
    patcher = getattr(objects, "unet", None)
    if patcher is None or not hasattr(patcher, "clone"):
        raise ValueError(f"p.sd_model.forge_objects.unet: missing or not a UnetPatcher; this {substrate.name} "
                         "build is not one Sloth knows")
    if not hasattr(patcher.model, "diffusion_model"):
        raise ValueError("p.sd_model.forge_objects.unet.model.diffusion_model: missing; not a UNet model")
    sampler = getattr(p, "sampler", None)
    if sampler is None or not hasattr(sampler, "callback_state"):
        raise ValueError("p.sampler: missing or without callback_state; cannot key the schedule on steps")
    unet = patcher.clone()
    sloth_pass = ComfyPass(unet, settings, seed, StepClock(sampler, getattr(p, "steps", 1) or 1), substrate,
                           recorder=job_of(p).recorder)  # "Show Sloth maps" (hooks.attach_pass)
    for note in notes:
        sloth_pass.patch.note(note)
    sloth_pass.check_builtins(getattr(p, "extra_generation_params", None) or {})
    if pass_cfg(p) == 1:
        for guidance in sloth_pass.guidances:
            if guidance.extra_rows == "uncond":
                sloth_pass.patch.note(no_uncond_note(guidance))
    objects.unet = unet
    follow_refiner(getattr(sampler, "model_wrap_cfg", None), sloth_pass)
    return sloth_pass


def follow_refiner(denoiser, sloth_pass: "ComfyPass") -> None:
    """Patch the refiner's UNet too when the WebUI switches to it in the middle of the pass.

    Both Forge lines switch inside sampling (modules/sd_samplers_common.py ``apply_refiner``, at the
    top of the CFG denoiser's ``forward``): they reload the model, then call the denoiser's
    ``update_inner_model`` (which drops ``model_wrap``, so ``inner_model`` is rebuilt from the new
    ``shared.sd_model``), then ``sampling_prepare`` the new ``forge_objects.unet``; the same
    ``forward`` then samples with ``inner_model.inner_model.forge_objects.unet``. No script
    callback runs again, so we wrap ``update_inner_model`` on the denoiser *instance* (it dies
    with the pass's sampler) and put a clone of the new patcher, patched by this pass, in place
    before the first UNet call of the refiner.
    """
    original = getattr(denoiser, "update_inner_model", None)
    if original is None:
        return
    original = getattr(original, "sloth_original", original)  # attached twice: replace, never nest

    def update_inner_model(*args, **kwargs):
        result = original(*args, **kwargs)
        model = getattr(getattr(denoiser, "inner_model", None), "inner_model", None)
        sloth_pass.follow(getattr(model, "forge_objects", None))
        return result

    update_inner_model.sloth_original = original
    denoiser.update_inner_model = update_inner_model


class ComfyPass:
    """Everything of one sampling pass; referenced only by the functions set on its UnetPatcher."""

    nothing_patched = False

    def __init__(self, unet, settings, seed: int, clock: StepClock, substrate: "Substrate", recorder=None):
        self.substrate = substrate
        self.clock = clock
        self.patch = SlothPatch(unet.model.diffusion_model, settings, seed, recorder=recorder,
                                upcast_for=substrate.upcast_for)
        self.guidances = self.patch.guidances  # lib_sloth.guidance objects of this pass
        self.notes = self.patch.notes  # grows while sampling
        self.unet_calls = 0  # UNet calls seen (tests, info)
        self._skipped_layers: Dict[tuple, None] = {}  # layers another attn1_patch changed (ordered set)
        self._skipped_note: Optional[int] = None  # index of the note listing them
        self._step_uncond_chunks = 0  # uncond chunks in this step's UNet calls, reset by the post-CFG
        self._step_cond_chunks = 0  # cond chunks likewise
        self._batched: Dict[object, torch.Tensor] = {}  # batching guidance -> its rows' x0, this step
        self._blocked: List = []  # guidances whose needed layer another extension replaced
        self._normaliser = self._normalise  # one bound method, so `is` finds it in a patch list

        self.post_cfg = self._make_post_cfg() if self.guidances else None
        self._install_on(unet)

    def _install_on(self, unet) -> None:
        """Register this pass's wrapper (and the guidances' post-CFG function) on one UnetPatcher."""
        existing = unet.model_options.get("model_function_wrapper")
        foreign = existing
        if getattr(existing, "sloth_pass", None) is not None:  # attached twice to one patcher: don't nest
            foreign = existing.sloth_foreign
            _drop_post_cfg(unet.model_options, existing.sloth_pass)
        self.foreign_wrapper = foreign
        if foreign is not None:
            recording = [methods.method_of(g).short for g in self.guidances if g.records]
            self.patch.note(f"another extension's UNet function wrapper ({_describe(foreign)}) runs inside "
                            "Sloth's; Sloth's patches apply to every UNet call it makes"
                            + (f"; {' and '.join(recording)} reads the map of the last uncond call it makes "
                               "(wrong for tiled diffusion)" if recording else ""))
        # plain functions, not bound methods: UnetPatcher.clone() deep-copies model_options, which
        # copies functions by reference but would deep-copy a bound method's instance (the UNet)
        self.wrapper = self._make_wrapper(foreign)
        self.bare_wrapper = self._make_wrapper(None)  # for a guidance's extra call: no foreign wrapper
        unet.set_model_unet_function_wrapper(self.wrapper)
        if self.post_cfg is not None:
            unet.set_model_sampler_post_cfg_function(self.post_cfg, disable_cfg1_optimization=False)
        self._blocked = []
        self._check_options(unet.model_options)

    # ---- the refiner switch --------------------------------------------------------------------
    def follow(self, objects) -> None:
        """The sampler now reads ``objects.unet`` (another model's patcher): patch a clone of it too,
        with the same settings, seed and step clock, and assign the clone back (see `follow_refiner`)."""
        patcher = getattr(objects, "unet", None)
        wrapper = (getattr(patcher, "model_options", None) or {}).get("model_function_wrapper")
        if patcher is None or getattr(wrapper, "sloth_pass", None) is self:
            return  # still ours (update_inner_model without a model change)
        unet = getattr(getattr(patcher, "model", None), "diffusion_model", None)
        if not hasattr(patcher, "clone") or not is_unet(unet):
            self.patch.note("Refiner: the refiner is not a UNet model; it ran without Sloth")
            return  # its patcher stays as loaded: nothing of this pass reaches it
        clone = patcher.clone()
        self.patch.retarget(clone.model.diffusion_model)
        self._install_on(clone)
        objects.unet = clone
        self.patch.note("Refiner: its UNet was patched too, with the same settings and step clock")

    # ---- neighbours ---------------------------------------------------------------------------
    def check_builtins(self, params) -> None:
        """Forge's built-in SAG / HyperTile, if their scripts ran before ours (their info-text keys)."""
        needing = [g for g in self.guidances if BUILTIN_SAG_LAYER in g.needs_layers]
        if params.get(BUILTIN_SAG_KEY) and needing:
            names = " and ".join(f"Sloth's {methods.method_of(g).short}" for g in needing)
            self.patch.note(f"Forge's built-in SelfAttentionGuidance is enabled too: it replaces the middle "
                            f"block's first self-attention, which {names} needs, so {names} is skipped "
                            "wherever it does; disable one of them")
        elif params.get(BUILTIN_SAG_KEY):
            self.patch.note("Forge's built-in SelfAttentionGuidance is enabled: Sloth leaves the middle block's "
                            "first self-attention to it")
        if params.get(BUILTIN_HYPERTILE_KEY):
            self.patch.note("Forge's built-in HyperTile is enabled too: layers it tiles are left to it; "
                            "disable it to use Sloth's tiling there")
        for guidance in self.guidances:
            twin = next((t for t in guidance.builtin_twins if params.get(t.key)), None)
            if twin is not None:
                self.patch.note(guidance.stand_down_for(twin))

    def _check_options(self, model_options) -> None:
        """Notes for attention patches of other extensions (at attach time and on every call)."""
        options = model_options.get("transformer_options") or {}
        foreign = [f for f in (options.get("patches") or {}).get("attn1_patch", ()) if f is not self._normaliser]
        if foreign:
            names = ", ".join(dict.fromkeys(_describe(f) for f in foreign))
            self.patch.note(f"another extension's attn1 patch is active ({names}): Sloth leaves every self-attention "
                            "call whose tokens it changes to it")
        replaced = list(((options.get("patches_replace") or {}).get("attn1") or {}).keys())
        if replaced:
            layers = {_our_layer(k) for k in replaced}
            blocked = [g for g in self.guidances if layers & set(g.needs_layers)]
            self._blocked = list(dict.fromkeys([*self._blocked, *blocked]))
            shown = ", ".join(_block_name(k) for k in replaced[:4]) + (f" and {len(replaced) - 4} more"
                                                                        if len(replaced) > 4 else "")
            skipped = "".join(f"; Sloth's {methods.method_of(g).short} is skipped, it needs the middle block's "
                              "first self-attention" for g in blocked)
            self.patch.note(f"another extension replaces attn1 of {shown} (Forge's built-in SAG?): Sloth leaves "
                            "those layers to it" + skipped)

    def _normalise(self, n, context, value, extra_options):
        """Appended after foreign attn1 patches of a call: untouched tokens become a plain self-attention call."""
        if context is n and value is n:
            return n, None, None
        if context is not None:
            block = extra_options.get("block")
            key = (*block, extra_options.get("block_index", 0)) if block else ("unknown", 0, 0)
            if key not in self._skipped_layers:
                self._skipped_layers[key] = None
                text = ("Sloth left these self-attention layers to another attn1 patch that changed their "
                        "tokens: " + ", ".join(_block_name(k) for k in self._skipped_layers))
                if self._skipped_note is None:
                    self._skipped_note = len(self.notes)
                    self.notes.append(text)
                else:
                    self.notes[self._skipped_note] = text
        return n, context, value

    def _with_normaliser(self, c):
        options = c.get("transformer_options") or {}
        patches = options.get("patches") or {}
        attn1 = list(patches.get("attn1_patch") or ())
        if not attn1 or any(f is self._normaliser for f in attn1):
            return c
        self._check_options({"transformer_options": options})
        # copies: the lists and dicts are shared with the UnetPatcher's model_options
        patches = {**patches, "attn1_patch": [*attn1, self._normaliser]}
        return {**c, "transformer_options": {**options, "patches": patches}}

    # ---- per UNet call ------------------------------------------------------------------------
    def _make_wrapper(self, foreign):
        sloth_pass = self

        def sloth_unet_wrapper(apply_model, args):
            return sloth_pass.unet_call(apply_model, args, foreign)

        sloth_unet_wrapper.sloth_pass = self
        sloth_unet_wrapper.sloth_foreign = foreign
        return sloth_unet_wrapper

    def unet_call(self, apply_model, args, foreign):
        self.unet_calls += 1
        c = self._with_normaliser(args["c"])
        if c is not args["c"]:
            args = {**args, "c": c}
        else:
            self._check_options({"transformer_options": c.get("transformer_options") or {}})
        self.patch.set_step(*self.clock.now(args.get("timestep")))
        armed = []
        batching = []
        if self.guidances and not self.patch.in_extra_pass:
            rows = self._uncond_rows(args.get("cond_or_uncond"), args["input"].shape[0])
            armed = [g for g in self.guidances if g.records and g not in self._blocked] if rows else []
            for guidance in armed:
                guidance.arm(rows)
            cond_rows = self._cond_rows(args.get("cond_or_uncond"), args["input"].shape[0])
            if (cond_rows and foreign is None and not any(g.records for g in self.guidances)
                    and not methods.batch_sensitive(self.patch.settings)):
                batching = [g for g in self.guidances if g.batches and g.batched_now() and g not in self._blocked]
        try:
            with self.patch:
                if batching:
                    out = self._with_appended_rows(apply_model, args, c, cond_rows, batching)
                    if out is not None:
                        return out
                if foreign is not None:
                    return foreign(apply_model, args)
                return apply_model(args["input"], args["timestep"], **c)
        except BaseException:
            self._drop_step()  # drop anything recorded: nothing of this step is used
            raise
        finally:
            for guidance in armed:
                guidance.stop_recording()

    def _with_appended_rows(self, apply_model, args, c, cond_rows: List[int], batching) -> Optional[torch.Tensor]:
        """One UNet call with the cond chunk's rows appended once per batching guidance, each perturbing
        its own copy; keeps their x0 for the post-CFG step and returns the call's own rows. None when
        the conds do not extend row by row (each guidance then makes its own extra call)."""
        x, t = args["input"], args["timestep"]
        n, m = x.shape[0], len(cond_rows)
        rows = cond_rows * len(batching)
        extended = try_appended(c, rows, n)
        if extended is None or not isinstance(t, torch.Tensor) or t.shape[:1] != (n,):
            return None
        options = extended.get("transformer_options")
        if isinstance(options, dict) and "cond_or_uncond" in options:
            extended["transformer_options"] = {**options, "cond_or_uncond": [*options["cond_or_uncond"],
                                                                                *[COND] * len(batching)]}
        with contextlib.ExitStack() as stack:
            for i, g in enumerate(batching):
                stack.enter_context(g.perturbing(list(range(n + i * m, n + (i + 1) * m))))
            out = apply_model(torch.cat([x, x[rows]]), torch.cat([t, t[rows]]), **extended)
        for i, g in enumerate(batching):
            g.batched_calls += 1
            self._batched[g] = out[n + i * m:n + (i + 1) * m]
        return out[:n]

    def _cond_rows(self, cond_or_uncond: Optional[Sequence[int]], rows: int) -> List[int]:
        """The rows of this call's cond chunk ([] if none, or if it holds several); counts this step's cond chunks."""
        chunks = list(cond_or_uncond or ())
        self._step_cond_chunks += chunks.count(COND)
        if chunks.count(COND) != 1 or rows % len(chunks):
            return []
        b = rows // len(chunks)
        first = chunks.index(COND)
        return list(range(first * b, (first + 1) * b))

    def _uncond_rows(self, cond_or_uncond: Optional[Sequence[int]], rows: int) -> List[int]:
        """The rows of the first uncond chunk of this call ([] if none); counts this step's uncond chunks."""
        chunks = list(cond_or_uncond or ())
        if UNCOND not in chunks:
            return []
        self._step_uncond_chunks += chunks.count(UNCOND)
        if rows % len(chunks):
            self.patch.note(f"a UNet call of {rows} rows in {len(chunks)} cond/uncond chunks: rows do not split "
                            "evenly; guidance recording skipped that call")
            return []
        b = rows // len(chunks)
        first = chunks.index(UNCOND)
        return list(range(first * b, (first + 1) * b))

    # ---- guidance (post-CFG, x0 space) ------------------------------------------------------------
    def _make_post_cfg(self):
        sloth_pass = self

        def sloth_guidance_post_cfg(args):
            return sloth_pass.post_cfg_step(args)

        sloth_guidance_post_cfg.sloth_pass = self
        return sloth_guidance_post_cfg

    def post_cfg_step(self, args):
        cfg = args["denoised"]
        uncond_chunks, self._step_uncond_chunks = self._step_uncond_chunks, 0
        cond_chunks, self._step_cond_chunks = self._step_cond_chunks, 0
        batched, self._batched = self._batched, {}
        x = args["input"]
        if cond_chunks != 1 or any(b.shape != x.shape for b in batched.values()):
            batched = {}  # several cond entries (or areas): their perturbed rows are not the cond prediction
        uncond_x0 = args.get("uncond_denoised")
        if not uncond_chunks or uncond_x0 is None or not args.get("uncond"):
            uncond_x0 = None  # the sampler hands zeros, not None, when no uncond ran
        elif uncond_x0.shape != x.shape:
            self.patch.note(f"guidance skipped: uncond prediction {tuple(uncond_x0.shape)} does not match the "
                            f"latent {tuple(x.shape)}")
            self._drop_step()
            return cfg
        elif uncond_chunks > 1:
            self.patch.note(f"guidance: {uncond_chunks} uncond conditionings in one step; maps are read from one")
        model, sigma = args["model"], args["sigma"]
        options = {**args["model_options"], "model_function_wrapper": self.bare_wrapper}

        def call_model(which: str, x_in: torch.Tensor) -> torch.Tensor:
            conds = [_without_area(entry) for entry in args.get(which) or ()]
            return self.substrate.x0_for(model, conds, x_in, sigma, options)

        step = GuidedStep(x, uncond_x0, args.get("cond_denoised"), call_model, batched=batched)
        for guidance in self.guidances:
            if guidance in self._blocked:
                guidance.disarm()
                continue
            if uncond_x0 is None and guidance.extra_rows == "uncond":
                self.patch.note(no_uncond_note(guidance))
            cfg = guidance.guide(cfg, step)
        return cfg

    def _drop_step(self) -> None:
        self._batched = {}
        for guidance in self.guidances:
            guidance.disarm()


# ---- helpers ----------------------------------------------------------------------------------
def pass_cfg(p):
    """The CFG scale this pass samples with: the hires pass of reForge and Forge main uses ``p.hr_cfg``
    (Forge main's CFG denoiser sets ``cond_scale = p.hr_cfg`` whenever ``p.is_hr_pass``)."""
    cfg = getattr(p, "cfg_scale", None)
    hr_cfg = getattr(p, "hr_cfg", None)
    if getattr(p, "is_hr_pass", False) and isinstance(hr_cfg, (int, float)) and hr_cfg > 0:
        cfg = hr_cfg
    return cfg


def _without_area(entry):
    """An ldm_patched cond dict covering the whole latent (reForge PR #487: mask/area break a guidance's call)."""
    if not isinstance(entry, dict):
        return entry
    return {k: v for k, v in entry.items() if k not in AREA_KEYS}


def _drop_post_cfg(model_options, sloth_pass) -> None:
    fns = model_options.get("sampler_post_cfg_function")
    if fns:
        model_options["sampler_post_cfg_function"] = [f for f in fns
                                                      if getattr(f, "sloth_pass", None) is not sloth_pass]


def _describe(fn) -> str:
    """A readable name for another extension's function: 'HyperTile.patch: hypertile_in'."""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    owner, _, _ = qualname.partition(".<locals>")
    name = qualname.rsplit(".", 1)[-1]
    return f"{owner}: {name}" if owner != qualname and owner != name else name


# Forge's built-in SAG replaces ComfyUI's ("middle", 0, 0): our ("middle", 0)
BUILTIN_SAG_LAYER = ("middle", 0)


def _our_layer(key):
    """A ComfyUI attn1 key (block, block id, transformer index) as our (block, index) for the middle
    block, whose transformers are counted in one run; None for other blocks (counted per block id)."""
    key = tuple(key)
    if key[:2] == ("middle", 0):
        return "middle", key[2] if len(key) > 2 else 0
    return None


def _block_name(key) -> str:
    key = tuple(key)
    if len(key) >= 3:
        return f"{key[0]} {key[1]}.{key[2]}"
    return " ".join(str(k) for k in key)
