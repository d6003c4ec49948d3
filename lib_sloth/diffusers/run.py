"""One `apply` block: everything Sloth installs on a pipeline, and everything it puts back.

    with apply(pipe, "speed", seed=1) as run:   # SlothSettings, a preset name or a settings dict
        images = pipe(...).images
    run.infotext    # "Sloth: v1, Sloth NSA: ..." for the image's metadata
    run.notes       # what was skipped or left unchanged, and why
    run.maps(images[0])  # "Show Sloth maps" images (settings show_maps), as PIL images

Entering installs, only when some method is active (otherwise nothing at all, and the images are
bit-identical): a SlothProcessor on every attn1 (lib_sloth.diffusers.processor), a forward
pre-hook and hook on the UNet (latent size, schedule step, SAG), block pre-hooks for AgentSD's
token metric, and the step clock on the scheduler instance. Leaving (normally, on an exception or
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
from ..sag import SagPass
from ..settings import SlothSettings, settings_from_dict
from . import processor
from ._engine import EngineState
from .clock import SchedulerClock
from .guidance import SagAroundUNet
from .layers import layer_index

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
        self.state = EngineState(self.settings, self.seed, layer_index(self.unet))
        self.state.recorder = MapRecorder(self.settings, self.seed) if self.settings.show_maps else None
        self._undo: List[Callable[[], None]] = []
        self._block_inputs: Dict[nn.Module, torch.Tensor] = {}
        self._extra_call = False  # SAG's own UNet call is under way
        self._signature = inspect.signature(self.unet.forward)
        self.sag: Optional[SagAroundUNet] = None
        self.clock: Optional[SchedulerClock] = None
        self._pinned = False  # set_step was called: the caller drives the schedule
        self._entered = False

    @property
    def notes(self) -> List[str]:
        return self.state.notes

    @property
    def infotext(self) -> str:
        return infotext_string(self.settings)

    @property
    def extra_unet_calls(self) -> int:
        """SAG's own UNet calls made so far (one per guided UNet call: its cost)."""
        return self.sag.extra_calls if self.sag is not None else 0

    @property
    def rewritten(self):
        """Layer name -> calls rewritten so far (SAG's recorded calls included)."""
        return self.state.rewritten

    def set_step(self, step: int, total: int) -> None:
        """Pin the schedule position (0-based step, steps of the run) for a caller that drives
        the UNet itself; pipelines need not call it (the scheduler's clock tells the step)."""
        self.state.set_step(step, total)
        self._pinned = True

    def maps(self, image) -> list:
        """The "Show Sloth maps" images (PIL), drawn over `image`; [] when maps were off or empty."""
        from ..webui import draw_maps  # PIL only; the WebUI's drawing, no WebUI import

        return [m.image for m in draw_maps.render(self.state.recorder, image, "diffusers")]

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
        if not len(self.state.index):
            self.state.note("no self-attention layers found in pipe.unet: nothing patched")
            return
        scheduler = getattr(self.pipe, "scheduler", None)
        if scheduler is not None:
            self.clock = SchedulerClock(scheduler)
            self._undo.append(self.clock.detach)
        sag = SagPass(self.settings.sag, self.state)
        self._undo.append(sag.close)
        if sag.active and self.clock is not None:
            self.sag = SagAroundUNet(sag, self.pipe, self.clock, self.state.note)
        elif sag.active:
            self.state.note("SAG skipped: it guides a pipeline's CFG and was given a bare UNet")
        pre = self.unet.register_forward_pre_hook(self._unet_starts, with_kwargs=True)
        self._undo.append(pre.remove)
        post = self.unet.register_forward_hook(self._unet_ends, with_kwargs=True, always_call=True)
        self._undo.append(post.remove)
        for block in self.state.index.owners if self.settings.agentsd.enabled else ():
            handle = block.register_forward_pre_hook(self._block_input_recorder(block.attn1), with_kwargs=True)
            self._undo.append(handle.remove)
        self._undo.append(processor.install(self.state, self._block_inputs))

    def _uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()
        self._block_inputs.clear()
        self.state.unet_call_ended()

    # ---- per UNet call ----------------------------------------------------------------------
    def _bound(self, args, kwargs) -> Dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        return dict(bound.arguments)

    def _unet_starts(self, module, args, kwargs):
        if self._extra_call:
            return None
        call = self._bound(args, kwargs)
        if self.clock is not None and not self._pinned:
            self.state.set_step(*self.clock.now(call["timestep"]))
        self.state.unet_call_started(tuple(call["sample"].shape[-2:]))
        if self.sag is not None:
            self.sag.before(call)
        return None

    def _unet_ends(self, module, args, kwargs, output):
        if self._extra_call:
            return None
        try:
            if self.sag is None or output is None:
                return None
            call = self._bound(args, kwargs)
            sample = output[0] if isinstance(output, tuple) else output.sample
            guided = self.sag.after(call, sample, self._run_extra)
            if guided is sample:
                return None
            return (guided, *output[1:]) if isinstance(output, tuple) else type(output)(sample=guided)
        finally:
            self.state.unet_call_ended()
            self._block_inputs.clear()
            if self.sag is not None:
                self.sag.disarm()

    def _run_extra(self, sample: torch.Tensor, **kwargs) -> torch.Tensor:
        """SAG's own UNet call: through the processors (the methods apply), recording nothing."""
        self._extra_call = True
        try:
            kwargs["return_dict"] = False
            return self.unet(sample, **kwargs)[0]
        finally:
            self._extra_call = False

    def _block_input_recorder(self, attn1: nn.Module):
        inputs = self._block_inputs

        def record(block, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states")
            if isinstance(x, torch.Tensor) and x.dim() == 3:
                inputs[attn1] = x
            else:
                inputs.pop(attn1, None)

        return record


def apply(pipe, settings: Settings = None, seed: int = 0) -> SlothRun:
    """Sloth on a diffusers pipeline (anything with `.unet`, a UNet2DConditionModel, and
    `.scheduler`) for the duration of a `with` block; or on a bare UNet2DConditionModel, whose
    caller tells the step with `SlothRun.set_step` (no SAG: it guides a pipeline's CFG). `seed` seeds the methods' own random
    choices (AgentSD's merge destinations), as the WebUIs use the batch's first seed."""
    return SlothRun(pipe, settings, seed)
