"""Which WebUI we run in, and the one call the Script makes into it per sampling pass.

    detect() -> Backend
    Backend.name: str
    Backend.attach(p, settings, seed) -> the pass object (its `notes`: a list that grows while sampling)

`attach` is called from the Script for every sampling pass of a job that has Sloth enabled
with an active method: the first pass, the hires-fix second pass and img2img (on A1111 1.10+
and Forge from ``process_before_every_sampling``; on A1111 1.7-1.9, which lack that hook, from
``process_batch`` for the first pass / img2img and from ``before_hr`` for the hires pass, where
``p.sampler`` may not exist yet for txt2img). `settings` is the validated, frozen
`SlothSettings` of the job; `seed` is the first seed of the current batch. It patches this pass
only (the A1111 adapter wraps ``p.sampler.model_wrap_cfg``; the Forge adapter clones
``p.sd_model.forge_objects.unet``) and returns the pass object, whose `notes` are short notes
for the console and the info text (e.g. "SAG skipped: no uncond at CFG 1"). It should not raise;
the Script reports it if it does.

A pass in which nothing could be patched (an unsupported WebUI, a Flux / SD3 model on Forge
main) returns `NothingPatched(notes)`: the Script then writes only the note into the info text,
no method keys, so a pasted image never claims settings that did not run. A pass that attaches
later (A1111 1.7-1.9's first txt2img pass) returns `PassNotes`, whose notes fill in then.

Detection is by import, like pamparamm's sd-perturbed-attention: ``ldm_patched`` -> Forge /
reForge (`lib_sloth.webui.forge.ForgeBackend`); Forge's newer ``backend`` package together with
``modules_forge`` -> Forge main (`lib_sloth.webui.forge_main.ForgeMainBackend`); neither ->
AUTOMATIC1111 (`lib_sloth.webui.a1111.A1111Backend`).
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, List, Optional


class PassNotes:
    """A pass's notes without a pass object: a pass that attaches later (its notes are filled in
    then), or, as `NothingPatched`, one that patched nothing. `notes` is kept, not copied."""

    nothing_patched = False

    def __init__(self, notes: Optional[List[str]] = None):
        self.notes: List[str] = [] if notes is None else notes


class NothingPatched(PassNotes):
    """A pass in which Sloth patched nothing (see the module docstring)."""

    nothing_patched = True


class Backend:
    """The adapter for one WebUI. Subclasses implement `attach`."""

    name = "backend"
    supported = True

    @property
    def ui_note(self) -> str:
        """A warning to show at the top of the accordion, or ''."""
        return ""

    def attach(self, p, settings, seed: int):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class UnsupportedBackend(Backend):
    """A WebUI we cannot patch: every pass says so once in the console and the info text."""

    supported = False

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message

    @property
    def ui_note(self) -> str:
        return self.message

    def attach(self, p, settings, seed: int) -> NothingPatched:
        return NothingPatched([self.message])


FindSpec = Callable[[str], object]


def detect(find_spec: FindSpec | None = None) -> Backend:
    """The backend for the running WebUI; never raises."""
    find_spec = find_spec or _find_spec
    if find_spec("ldm_patched") is not None:
        return _adapter("forge", "ForgeBackend", "Forge (ldm_patched)")
    if find_spec("backend") is not None and find_spec("modules_forge") is not None:
        return _adapter("forge_main", "ForgeMainBackend", "Forge (backend)")
    return _adapter("a1111", "A1111Backend", "AUTOMATIC1111")


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _adapter(module: str, cls: str, name: str) -> Backend:
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)()
    except Exception as err:  # a missing or broken adapter must not break the WebUI's start-up
        return UnsupportedBackend(name, f"Sloth's {name} adapter could not be loaded ({err}); nothing will be "
                                        "patched.")
