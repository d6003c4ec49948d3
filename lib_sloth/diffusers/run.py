"""One `apply` block: everything Sloth installs on a pipeline, and everything it puts back.

    with apply(pipe, "speed", seed=1) as run:   # SlothSettings, a preset name or a settings dict
        images = pipe(...).images
    run.infotext    # "Sloth: v1, Sloth NSA: ..." for the image's metadata
    run.notes       # what was skipped or left unchanged, and why
    run.maps(images[0])  # "Show Sloth maps" images (settings show_maps), as PIL images

Entering installs, only when some method is active (otherwise nothing at all, and the images are
bit-identical): a SlothProcessor on every attn1 (lib_sloth.diffusers.processor), the engine's
SlothPatch hooks (latent size; the transformer blocks' inputs when a method reads them), a
forward pre-hook and hook on the UNet (schedule step, guidance) and the step clock on the
scheduler instance. Leaving (normally, on an exception or
on KeyboardInterrupt) removes all of it. Set the pipeline's scheduler before entering.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .. import infotext
from ..maps import MapRecorder
from ..methods import any_active
from ..presets import preset
from ..settings import SlothSettings, settings_from_dict
from . import processor
from ._engine import engine_patch
from .clock import SchedulerClock
from .guidance import GuidanceAroundUNet

Settings = Union[SlothSettings, str, Mapping[str, Any], None]


def resolve_settings(settings: Settings) -> SlothSettings:
    """SlothSettings as given; a preset name; or a settings dict (nested or dotted keys, as the
    WebUI API takes), optionally with "preset" naming its base. Bad names or values raise
    SettingsError naming the field and its allowed range."""
    if isinstance(settings, SlothSettings):
        return settings
    if isinstance(settings, str):
        return preset(settings)
    data = dict(settings or {})
    base = data.pop("preset", None)
    return settings_from_dict(data, base=preset(base) if base is not None else None)


def infotext_string(settings: SlothSettings) -> str:
    """The info-text entries as one "key: value, key: value" string (A1111's parameters format)."""
    if not settings.active:
        return ""
    return ", ".join(f"{k}: {_quoted(v)}" for k, v in infotext.to_params(settings).items())


def _quoted(value: str) -> str:
    return json.dumps(value) if any(c in value for c in ',:\n"') else value


class SlothRun:
    """The `with` context of `apply`; see the module docstring."""

    def __init__(self, target, settings: Settings = None, seed: int = 0):
        self.pipe = target if hasattr(target, "unet") else None  # None: a bare UNet (see `apply`)
        self.unet: nn.Module = target.unet if self.pipe is not None else target
        self.settings = resolve_settings(settings)
        self.seed = int(seed)
        recorder = MapRecorder(self.settings, self.seed) if self.settings.show_maps else None
        self.patch = engine_patch(self.unet, self.settings, self.seed, recorder)
        self.guidance: Optional[GuidanceAroundUNet] = None
        self.clock: Optional[SchedulerClock] = None
        self._undo: List[Callable[[], None]] = []
        self._extra_call = False  # a guidance's own UNet call is under way
        self._signature = inspect.signature(self.unet.forward)
        self._pinned = False  # set_step was called: the caller drives the schedule
        self._entered = False

    @property
    def notes(self) -> List[str]:
        return self.patch.notes

    @property
    def infotext(self) -> str:
        return infotext_string(self.settings)

    @property
    def extra_unet_calls(self) -> int:
        """The guidances' own UNet calls made so far (SAG: one per guided UNet call, its cost)."""
        return sum(self.patch.extra_calls.values())

    @property
    def rewritten(self):
        """Layer name -> calls rewritten so far (guidance recording included)."""
        return self.patch.rewritten

    def set_step(self, step: int, total: int) -> None:
        """Pin the schedule position (0-based step, steps of the run) for a caller that drives
        the UNet itself; pipelines need not call it (the scheduler's clock tells the step)."""
        self.patch.set_step(step, total)
        self._pinned = True

    def maps(self, image) -> list:
        """The "Show Sloth maps" images (PIL), drawn over `image`; [] when maps were off or empty."""
        from .. import draw_maps  # PIL, only when maps are drawn

        return [m.image for m in draw_maps.render(self.patch.recorder, image, "diffusers")]

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "SlothRun":
        if self._entered:
            raise RuntimeError("a Sloth run is entered once; use a new apply() block")
        self._entered = True
        if not any_active(self.settings):
            return self
        try:
            self._install()
        except BaseException:
            self._uninstall()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._uninstall()
        return False

    def _install(self) -> None:
        patch = self.patch
        if not len(patch.layers):
            patch.note("no self-attention layers found in the UNet: nothing patched")
            return
        scheduler = getattr(self.pipe, "scheduler", None)
        if scheduler is not None:
            self.clock = SchedulerClock(scheduler)
            self._undo.append(self.clock.detach)
        for guidance in list(patch.guidances):
            self._undo.append(guidance.close)
        if patch.guidances and self.clock is not None:
            self.guidance = GuidanceAroundUNet(patch.guidances, self.pipe, self.clock, patch.note)
        elif patch.guidances:
            patch.note("guidance skipped: it guides a pipeline's CFG and was given a bare UNet")
        patch.__enter__()  # the latent-size hook, and the block-input hooks when a method reads them
        self._undo.append(lambda: patch.__exit__(None, None, None))
        pre = self.unet.register_forward_pre_hook(self._unet_starts, with_kwargs=True)
        self._undo.append(pre.remove)
        post = self.unet.register_forward_hook(self._unet_ends, with_kwargs=True, always_call=True)
        self._undo.append(post.remove)
        self._undo.append(processor.install(patch))

    def _uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    # ---- per UNet call ----------------------------------------------------------------------
    def _bound(self, args, kwargs) -> Dict[str, Any]:
        return dict(self._signature.bind(*args, **kwargs).arguments)

    def _unet_starts(self, module, args, kwargs):
        if self._extra_call:
            return None
        call = self._bound(args, kwargs)
        self.patch.latent_hw = tuple(call["sample"].shape[-2:])  # also when the sample is passed by name
        if self.clock is not None and not self._pinned:
            self.patch.set_step(*self.clock.now(call["timestep"]))
        if self.guidance is not None:
            self.guidance.before(call)
        return None

    def _unet_ends(self, module, args, kwargs, output):
        if self._extra_call or self.guidance is None:
            return None
        try:
            if output is None:  # the forward raised (always_call)
                return None
            sample = output[0] if isinstance(output, tuple) else output.sample
            guided = self.guidance.after(self._bound(args, kwargs), sample, self._run_extra)
            if guided is sample:
                return None
            return (guided, *output[1:]) if isinstance(output, tuple) else type(output)(sample=guided)
        finally:
            self.guidance.disarm()

    def _run_extra(self, sample: torch.Tensor, **kwargs) -> torch.Tensor:
        """A guidance's own UNet call: through the processors (the patch plans it as that
        guidance's extra pass), skipped by these hooks."""
        self._extra_call = True
        try:
            kwargs["return_dict"] = False
            return self.unet(sample, **kwargs)[0]
        finally:
            self._extra_call = False


def apply(pipe, settings: Settings = None, seed: int = 0) -> SlothRun:
    """Sloth on a diffusers pipeline (anything with `.unet`, a UNet2DConditionModel, and
    `.scheduler`) for the duration of a `with` block; or on a bare UNet2DConditionModel, whose
    caller tells the step with `SlothRun.set_step` (no SAG: it guides a pipeline's CFG). `seed` seeds the methods' own random
    choices (AgentSD's merge destinations), as the WebUIs use the batch's first seed."""
    return SlothRun(pipe, settings, seed)
