"""A method that is on but changes no layer says so in `Sloth notes`, instead of leaving a plain image
unexplained (Near-sighted Tile on SDXL at 256 x 256, where every level fits in one tile; Slothful
with every strength at or below 1 after its decays).

`IdleWatch` is handed every planned self-attention call of a pass (`SlothPatch._plan_for`) and
asks each enabled method's own planner, once per distinct (latent, block, grid, step), whether it
would rewrite the call. While a method has rewritten none of the calls seen, the pass's notes hold
one note for it, with the reason its table entry gives (`Method.idle_reason`, from its own module); its first rewrite takes the note away. The
WebUI glue reads the notes after sampling, so what they say then is a fact about the whole pass.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from . import methods
from .layer_call import LayerCall


class IdleWatch:
    def __init__(self, settings):
        self.settings = settings
        self.waiting = [m for m in methods.in_plan_order() if m.active(settings)]  # no rewrite seen yet
        self.calls: List[LayerCall] = []  # distinct calls seen, without their tensors
        self.latents: List[tuple] = []
        self._keys: set = set()
        self._noted: Dict[str, str] = {}  # method name -> its note, as it stands in the notes list

    def see(self, call: LayerCall, latent_hw: tuple, notes: list) -> None:
        """One planned call (with a token grid) of the latent `latent_hw`; keeps `notes` current."""
        if not self.waiting:
            return
        key = (tuple(latent_hw), call.block, call.grid, call.step, call.total)
        if key in self._keys:
            return
        self._keys.add(key)
        self.calls.append(dataclasses.replace(call, block_input=None))
        if tuple(latent_hw) not in self.latents:
            self.latents.append(tuple(latent_hw))
        for method in list(self.waiting):
            if method.plan(method.block(self.settings), call) is not None:
                self.waiting.remove(method)
        self._sync(notes)

    def _sync(self, notes: list) -> None:
        waiting = {m.name for m in self.waiting}
        for method in methods.in_plan_order():
            old = self._noted.pop(method.name, None)
            new = self.note(method) if method.name in waiting else None
            if old is not None and old in notes:
                if new is None:
                    notes.remove(old)
                else:
                    notes[notes.index(old)] = new
            elif new is not None and new not in notes:
                notes.append(new)
            if new is not None:
                self._noted[method.name] = new

    def note(self, method) -> str:
        sizes = ", ".join(f"{h}x{w}" for h, w in self.latents)
        why = method.idle_reason
        reason = why(method.block(self.settings), self.calls) if why else "it found nothing to change"
        return f"{method.title} is on but changed no layer of this {sizes} latent: {reason}"
