"""Replacing `forward`s for a while and putting every one back.

`ForwardPatcher` keeps an undo stack. `patch_class` replaces a class's forward (every instance,
including ones the WebUI creates later, sees it; the forward that was there is chained, so an
optimisation installed before us keeps running wherever we do not rewrite); `patch_instance`
does the same for one module that carries its own forward (e.g. HyperTile's), which would
otherwise shadow the class's. `restore` undoes everything, newest first, and is what a patch
context calls on exit, exception and KeyboardInterrupt alike.
"""
from __future__ import annotations

from typing import Callable, List

from torch import nn

_MISSING = object()


class ForwardPatcher:
    def __init__(self, note: Callable[[str], None] = lambda message: None):
        self._undo: List[Callable[[], None]] = []
        self._note = note

    @property
    def patched(self) -> bool:
        return bool(self._undo)

    def on_restore(self, undo: Callable[[], None]) -> None:
        """Run `undo` (e.g. a hook handle's remove) when the patches are restored."""
        self._undo.append(undo)

    def patch_class(self, cls: type, wrap: Callable[[Callable], Callable]) -> None:
        """cls.forward = wrap(the forward in place now); restored unless someone replaced ours meanwhile.

        wrap(original) must return forward(module, x, *args, **kwargs).
        """
        saved = cls.__dict__.get("forward", _MISSING)
        original = cls.forward
        forward = wrap(original)
        forward.__sloth_original__ = original
        cls.forward = forward

        def undo():
            if cls.__dict__.get("forward") is not forward:
                # someone (e.g. the WebUI re-applying its optimisation) replaced ours: keep theirs
                self._note(f"{cls.__name__}.forward was replaced while patched; left the newer one")
                return
            if saved is _MISSING:
                delattr(cls, "forward")
            else:
                cls.forward = saved

        self._undo.append(undo)

    def patch_instance(self, module: nn.Module, wrap: Callable[[Callable], Callable]) -> None:
        """module's own forward = wrap(its own forward); wrap(original) returns forward(x, *args, **kwargs)."""
        original = module.__dict__["forward"]
        forward = wrap(original)
        module.__dict__["forward"] = forward

        def undo():
            if module.__dict__.get("forward") is forward:
                module.__dict__["forward"] = original

        self._undo.append(undo)

    def restore(self) -> None:
        """Undo everything, newest first."""
        while self._undo:
            self._undo.pop()()
