"""The one patching context: rewrites the UNet's self-attention while a `with` block runs.

    with SlothPatch(unet, settings, seed=seed) as sloth:
        for i, sigma in enumerate(sigmas):
            sloth.set_step(i, len(sigmas))
            ... unet(x, t, context) ...

`unet` is the diffusion model itself (the module with input_blocks / middle_block /
output_blocks). The forward of the attention classes its attn1 layers use is replaced for the
duration; each call first decides (methods.plan_layer) whether to rewrite, and otherwise chains
to the forward that was installed when the block was entered, unchanged. Everything is put
back on exit, exception or KeyboardInterrupt. All per-pass state lives on this object.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .agentsd import merged_by_tomesd, without_agentsd
from .geometry import grid_for_tokens
from .layer_call import LayerCall, Runner
from .methods import any_active, plan_layer
from .settings import SlothSettings

_MISSING = object()
# keyword arguments that mean "not a plain self-attention call": leave those to the original
_FOREIGN_INPUTS = ("context", "mask", "value", "additional_tokens")

# An interceptor may take over a call before the planners (SAG records its map this way).
Interceptor = Callable[[nn.Module, "LayerInfo", torch.Tensor, LayerCall], Optional[Runner]]


@dataclass(frozen=True)
class LayerInfo:
    name: str  # module path in the UNet, e.g. "middle_block.1.transformer_blocks.0.attn1"
    block: str  # "input", "middle" or "output"
    index: int  # order of this attn1 within its block group


def find_self_attention(unet: nn.Module) -> Dict[nn.Module, LayerInfo]:
    """Every attn1 of a transformer block whose attn1 really is self-attention."""
    layers: Dict[nn.Module, LayerInfo] = {}
    counts: Dict[str, int] = {}
    for name, module in unet.named_modules():
        attn1 = getattr(module, "attn1", None)
        if not isinstance(attn1, nn.Module) or not hasattr(attn1, "to_q"):
            continue
        if getattr(module, "disable_self_attn", False):
            continue
        block = _block_of(name)
        if block is None:
            continue
        layers[attn1] = LayerInfo(f"{name}.attn1", block, counts.get(block, 0))
        counts[block] = counts.get(block, 0) + 1
    return layers


_BLOCKS = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


def _block_of(name: str) -> Optional[str]:
    # the first block-group name on the path, so a UNet wrapped in another module still works
    return next((_BLOCKS[part] for part in name.split(".") if part in _BLOCKS), None)


def shallowest_attention_downsample(unet: nn.Module) -> int:
    """Downsample factor of the shallowest level that has self-attention (SD1.x: 1, SDXL: 2).

    Walks the input blocks in order, doubling at each Downsample module, so it needs no
    knowledge of channel counts or heads.
    """
    factor = 1
    for name, module in unet.named_modules():
        if _block_of(name) != "input":
            continue
        if type(module).__name__ == "Downsample":
            factor *= 2
        elif getattr(module, "attn1", None) is not None and not getattr(module, "disable_self_attn", False):
            return factor
    return 1


class SlothPatch:
    def __init__(self, unet: nn.Module, settings: SlothSettings, seed: int = 0):
        self.unet = unet
        self.settings = settings
        self.seed = int(seed)
        self.step = 0
        self.total = 1
        self.latent_hw: Optional[tuple] = None
        self.notes: List[str] = []
        self.interceptors: List[Interceptor] = []
        self.recorder = None  # a maps.MapRecorder when the user asked for maps; None = record nothing
        self.layers: Dict[nn.Module, LayerInfo] = {}
        self.rewritten: Counter = Counter()  # layer name -> calls rewritten, for info and tests
        self.installed = False
        self._owners: List[nn.Module] = []  # transformer blocks whose attn1 we patch
        self._plan_settings = settings  # what the planners see this forward (see _settings_now)
        self._base_log2 = 0
        self._entered = 0
        self._undo: List[Callable[[], None]] = []

    # ---- schedule ---------------------------------------------------------------------------
    def set_step(self, step: int, total: int) -> None:
        """Current sampling step (0-based) and the number of steps of this pass."""
        if int(total) < 1 or not 0 <= int(step):
            raise ValueError(f"step={step}, total={total}: need 0 <= step and total >= 1")
        self.step, self.total = int(step), int(total)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "SlothPatch":
        self._entered += 1
        if self._entered == 1 and (any_active(self.settings) or self.interceptors):
            try:
                self._install()
            except BaseException:
                self._uninstall()
                self._entered = 0
                raise
        return self

    def __exit__(self, *exc) -> bool:
        self._entered -= 1
        if self._entered == 0:
            self._uninstall()
        return False

    def _install(self) -> None:
        if not self.layers:  # the UNet's structure does not change within a pass: walk it once
            self.layers = find_self_attention(self.unet)
            self._owners = [m for m in self.unet.modules() if getattr(m, "attn1", None) in self.layers]
            self._base_log2 = int(math.log2(shallowest_attention_downsample(self.unet)))
        if not self.layers:
            self.note("no self-attention layers found: nothing patched")
            return
        handle = self.unet.register_forward_pre_hook(self._record_latent, with_kwargs=True)
        self._undo.append(handle.remove)
        if any(merged_by_tomesd(b) for b in self._owners):
            self.note("token merging (tomesd) is active on this UNet; layers whose tokens it merged "
                      "are left unchanged")
        for cls in {type(m) for m in self.layers}:
            self._patch_class(cls)
        shadowed = [m for m in self.layers if "forward" in m.__dict__]
        for module in shadowed:
            self._patch_instance(module)
        if shadowed:
            self.note(f"{len(shadowed)} attention layers carry their own forward (e.g. HyperTile); "
                      "sloth rewrites them where active and calls their forward elsewhere")
        self.installed = True

    def _uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.installed = False
        self.latent_hw = None

    def _record_latent(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, torch.Tensor) and x.dim() >= 3:
            self.latent_hw = tuple(x.shape[-2:])
        self._plan_settings = self._settings_now()

    def _settings_now(self) -> SlothSettings:
        """The settings, minus AgentSD while tomesd merges this UNet's blocks: never merge twice.

        Checked every UNet forward, because the WebUI (re)applies its token merging per pass.
        """
        if not self.settings.agentsd.enabled or not any(merged_by_tomesd(b) for b in self._owners):
            return self.settings
        self.note("AgentSD skipped: token merging (tomesd, e.g. the WebUI's 'Token merging ratio') is active "
                  "on this UNet, and tokens must not be merged twice; set that ratio to 0 to use AgentSD")
        return without_agentsd(self.settings)

    def _patch_class(self, cls) -> None:
        saved = cls.__dict__.get("forward", _MISSING)
        original = cls.forward
        runner_for = self._runner_for

        def forward(module, x, *args, **kwargs):
            runner = runner_for(module, x, args, kwargs)
            if runner is None:
                return original(module, x, *args, **kwargs)
            return module.to_out(runner(module, x))

        forward.__sloth_original__ = original
        cls.forward = forward

        def undo():
            if cls.__dict__.get("forward") is not forward:
                # someone (e.g. the WebUI re-applying its optimisation) replaced ours: keep theirs
                self.note(f"{cls.__name__}.forward was replaced while patched; left the newer one")
                return
            if saved is _MISSING:
                delattr(cls, "forward")
            else:
                cls.forward = saved

        self._undo.append(undo)

    def _patch_instance(self, module: nn.Module) -> None:
        original = module.__dict__["forward"]
        runner_for = self._runner_for

        def forward(x, *args, **kwargs):
            runner = runner_for(module, x, args, kwargs)
            if runner is None:
                return original(x, *args, **kwargs)
            return module.to_out(runner(module, x))

        module.__dict__["forward"] = forward

        def undo():
            if module.__dict__.get("forward") is forward:
                module.__dict__["forward"] = original

        self._undo.append(undo)

    # ---- per call ---------------------------------------------------------------------------
    def _runner_for(self, module, x, args, kwargs) -> Optional[Runner]:
        info = self.layers.get(module)
        if info is None or self.latent_hw is None or x.dim() != 3:
            return None
        if any(a is not None for a in args) or any(kwargs.get(k) is not None for k in _FOREIGN_INPUTS):
            return None  # cross-attention, masks, extra tokens: not ours to change
        if kwargs.get("n_times_crossframe_attn_in_self"):
            return None
        grid = grid_for_tokens(x.shape[1], self.latent_hw)
        if grid is None:
            self.note(f"{info.name}: {x.shape[1]} tokens match no grid of the "
                      f"{self.latent_hw[0]}x{self.latent_hw[1]} latent (merged by another extension?); left unchanged")
            if not self.interceptors:
                return None
            # interceptors still see it (SAG records its map under Kohya-style shrinks and
            # factorises the grid later); h = w = 0 marks the grid unknown; planners never run
            grid = (0, 0, 0)
        h, w, downsample = grid
        level = max(0, int(math.log2(downsample)) - self._base_log2) if downsample else 0
        call = LayerCall(info.block, level, h, w, x.shape[0], self.step, self.total, self.seed,
                         self.settings.upcast_attention)
        runner = None
        for interceptor in self.interceptors:
            runner = interceptor(module, info, x, call)
            if runner is not None:
                break
        else:
            runner = plan_layer(self._plan_settings, call) if downsample else None
        if runner is not None:
            self.rewritten[info.name] += 1
        if self.recorder is not None and downsample:
            self.recorder.layer(call, runner, self.latent_hw)
        return runner
