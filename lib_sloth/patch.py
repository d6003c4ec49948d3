"""The one patching context: rewrites the UNet's self-attention while a `with` block runs.

    with SlothPatch(unet, settings, seed=seed) as sloth:
        for i, sigma in enumerate(sigmas):
            sloth.set_step(i, len(sigmas))
            ... unet(x, t, context) ...

`unet` is the diffusion model (the module with input_blocks / middle_block / output_blocks).
While the block runs, the forward of the attention classes its attn1 layers use is replaced
(lib_sloth.forward_patch); each call is planned here (interceptors and guidances first, then the
method table's planners) and otherwise chained, unchanged, to the forward installed before.
Everything is put back on exit, exception or KeyboardInterrupt. All per-pass state lives on this
object, including the pass's guidance objects (`guidances`, one per active guidance method).

A front end hands its policies over at construction: `kv_source(x) -> (k_in, v_in)` (what K and V
are computed from: A1111's hypernetworks), `upcast_for(layer) -> bool` (the WebUI's precision
choice), `recorder` ("Show Sloth maps"), and, for a UNet of another layout, its own `layers`
index with `forwards=False` (it then routes attention calls to `attention_call` itself).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

import contextlib

from . import methods
from .forward_patch import ForwardPatcher
from .idle import IdleWatch
from .layer_call import LayerCall, Plan
from .layers import LayerIndex, LayerInfo
from .settings import SlothSettings
from .tome import merged_by_tomesd

# keyword arguments that mean "not a plain self-attention call": leave those to the original
_FOREIGN_INPUTS = ("context", "mask", "value", "additional_tokens")

# An interceptor may take over a call before the guidances and planners (tests, extensions of the
# extension). It also sees calls whose grid is unknown (call.grid None); planners never do.
Interceptor = Callable[[nn.Module, LayerInfo, torch.Tensor, LayerCall], Optional[Plan]]
KVSource = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
TOMESD_WHERE = "token merging (tomesd, e.g. the WebUI's 'Token merging ratio') is active on this UNet"


# A1111's built-in HyperTile (extensions-builtin/hypertile/hypertile.py, hypertile_hook_model)
# installs its instance forward once per model, keeps it for good and only flips params.enabled
_HYPERTILE_PARAMS = "__webui_hypertile_params"


def own_forward_active(module: nn.Module) -> bool:
    """Whether a layer's own (instance) forward does anything this call: False for A1111's
    HyperTile while it is switched off for the job; True for any forward we cannot inspect."""
    params = module.__dict__.get(_HYPERTILE_PARAMS)
    return True if params is None else bool(getattr(params, "enabled", True))


def _self_context_dropped(x, args, kwargs):
    """A context that *is* x is plain self-attention (sd-webui-controlnet's hooked transformer
    block calls attn1(x, context=x) whenever no reference bank is read): drop it."""
    if args and args[0] is x:
        args = (None,) + tuple(args[1:])
    if kwargs.get("context") is x:
        kwargs = {**kwargs, "context": None}
    return args, kwargs


class SlothPatch:
    def __init__(self, unet: nn.Module, settings: SlothSettings, seed: int = 0, *,
                 kv_source: Optional[KVSource] = None, upcast_for: Optional[Callable[[nn.Module], bool]] = None,
                 recorder=None, layers: Optional[LayerIndex] = None, forwards: bool = True):
        self.unet = unet
        self.settings = settings
        self.seed = int(seed)
        self.step = 0
        self.total = 1
        self.latent_hw: Optional[tuple] = None  # (H, W) of the current UNet call's latent
        self.notes: List[str] = []
        # kv_source(x) -> (k_in, v_in): what the layer's K and V are computed from (None = x itself).
        # upcast_for(layer) -> bool: the WebUI's own precision choice (None = the layer's attn_precision,
        # which ldm_patched / ComfyUI set to torch.float32 per layer). settings.upcast_attention forces fp32.
        self.kv_source = kv_source
        self.upcast_for = upcast_for
        self.recorder = recorder  # a maps.MapRecorder when the user asked for maps; None = record nothing
        self.interceptors: List[Interceptor] = []
        self.index: Optional[LayerIndex] = layers  # built at the first install, again only after `retarget`
        self.rewritten: Counter = Counter()  # layer name -> calls rewritten, for info and tests
        self.guidances: list = []  # the pass's lib_sloth.guidance.Guidance objects (they join at creation)
        self._forwards = forwards
        self._extra_of = None  # the guidance whose extra UNet call is running; None = the normal pass
        self.idle = IdleWatch(settings)  # notes an enabled method that changes no layer (lib_sloth/idle.py)
        self._block_inputs: Dict[nn.Module, torch.Tensor] = {}  # attn1 -> its block's input, this call
        self._plan_settings = settings  # what the planners see this forward (see _settings_now)
        self._entered = 0
        self._retargeting = False
        # a forward replaced while patched is noted, except when retargeting: the WebUI's model load re-applies its own
        self._patcher = ForwardPatcher(lambda message: None if self._retargeting else self.note(message))
        for method in methods.guidance_methods(settings):
            method.guidance(method.block(settings), self)
        self._made = tuple(self.guidances)  # counted by extra_calls even after one closes (leaves the pass)

    def guidance(self, name: str):
        """This pass's guidance object of method `name`, or None when that method is not active."""
        kind = methods.get(name).guidance
        return next((g for g in self.guidances if type(g) is kind), None)

    @contextlib.contextmanager
    def extra_pass(self, guidance):
        """While the block runs, attention calls belong to `guidance`'s extra UNet call: only its
        `perturb_plan` plans them (the other guidances record nothing)."""
        outer, self._extra_of = self._extra_of, guidance
        try:
            yield
        finally:
            self._extra_of = outer

    @property
    def extra_calls(self) -> Counter:
        """Guidance method name -> extra UNet calls its guidance made in this pass (each Guidance
        counts its own; this is their sum by method, for info and tests)."""
        counts: Counter = Counter()
        for g in dict.fromkeys((*self._made, *self.guidances)):  # also those that joined later
            counts[methods.method_of(g).name] += g.extra_calls
        return counts

    @property
    def in_extra_pass(self) -> bool:
        return self._extra_of is not None

    @property
    def layers(self) -> Dict[nn.Module, LayerInfo]:
        """attn1 module -> where it sits; empty before the first install."""
        return self.index.layers if self.index is not None else {}

    @property
    def installed(self) -> bool:
        return self._patcher.patched

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
        if self._entered == 1 and self._wanted():
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

    def _wanted(self) -> bool:
        """Whether anything could change a call: else nothing is installed (bit-identical by construction)."""
        return methods.any_active(self.settings) or bool(self.interceptors) or bool(self.guidances)

    def _install(self) -> None:
        if self.index is None:
            self.index = LayerIndex(self.unet)
        if not len(self.index):
            self.note("no self-attention layers found: nothing patched")
            return
        handle = self.unet.register_forward_pre_hook(self._record_latent, with_kwargs=True)
        self._patcher.on_restore(handle.remove)
        # the block input (LayerCall.block_input) is hooked only when an enabled method reads it; the
        # settings are fixed for the patch's life, so otherwise the blocks stay hook-free
        for block in self.index.owners if methods.needs_block_input(self.settings) else ():
            handle = block.register_forward_pre_hook(self._block_input_recorder(block.attn1), with_kwargs=True)
            self._patcher.on_restore(handle.remove)
        if any(merged_by_tomesd(b) for b in self.index.owners):
            self.note("token merging (tomesd) is active on this UNet; layers whose tokens it merged "
                      "are left unchanged")
        if not self._forwards:
            return  # the front end routes attention calls to `attention_call` itself
        for cls in {type(m) for m in self.index}:
            self._patcher.patch_class(cls, self._class_forward)
        shadowed = [m for m in self.index if "forward" in m.__dict__]
        for module in shadowed:
            self._patcher.patch_instance(module, lambda original, module=module: self._own_forward(module, original))
        active = sum(own_forward_active(m) for m in shadowed)
        if active:
            self.note(f"{active} attention layers carry their own forward (e.g. HyperTile); "
                      "sloth rewrites them where active and calls their forward elsewhere")

    def retarget(self, unet: nn.Module) -> bool:
        """Follow the sampler to another UNet in the middle of a pass (A1111's refiner switch builds
        a new model inside the CFG denoiser): the old one is left as it was found, the new one is
        indexed and patched with the same settings, step and seed. False if it is the same UNet."""
        if unet is self.unet:
            return False
        active = self._entered > 0
        if active:
            self._retargeting = True  # the WebUI re-applied its attention forward on load: expected
            try:
                self._uninstall()
            finally:
                self._retargeting = False
        self.unet, self.index = unet, None  # a retargeted UNet is indexed the ldm way
        if active and self._wanted():
            self._install()
        return True

    def _uninstall(self) -> None:
        self._patcher.restore()
        self.latent_hw = None
        self._block_inputs.clear()

    def _block_input_recorder(self, attn1: nn.Module):
        """A pre-hook for a transformer block: keeps its input x (before norm1) for its attn1 call."""
        inputs = self._block_inputs

        def record(block, args, kwargs):
            x = args[0] if args else kwargs.get("x")
            if isinstance(x, torch.Tensor) and x.dim() == 3:
                inputs[attn1] = x
            else:
                inputs.pop(attn1, None)

        return record

    def _record_latent(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, torch.Tensor) and x.dim() >= 3:
            self.latent_hw = tuple(x.shape[-2:])
        self._plan_settings = self._settings_now()

    def _settings_now(self) -> SlothSettings:
        """The settings, minus the methods that stand down while tomesd merges this UNet's blocks.

        Checked every UNet forward, because the WebUI (re)applies its token merging per pass.
        """
        yielding = methods.standing_down_for_token_merging(self.settings)
        if not yielding or not any(merged_by_tomesd(b) for b in self.index.owners):
            return self.settings
        for method in yielding:
            self.note(methods.token_merging_note(method, TOMESD_WHERE))
        return methods.without(self.settings, [m.name for m in yielding])

    # ---- the patched forwards ----------------------------------------------------------------
    def _class_forward(self, original):
        attention_call = self.attention_call

        def forward(module, x, *args, **kwargs):
            out = attention_call(module, x, args, kwargs)
            return original(module, x, *args, **kwargs) if out is None else out

        return forward

    def _own_forward(self, module, original):
        attention_call = self.attention_call

        def forward(x, *args, **kwargs):
            out = attention_call(module, x, args, kwargs)
            return original(x, *args, **kwargs) if out is None else out

        return forward

    # ---- per call ---------------------------------------------------------------------------
    def attention_call(self, module, x: torch.Tensor, args=(), kwargs=None) -> Optional[torch.Tensor]:
        """The output of one attn1 call when a plan rewrites it; None = the caller runs its original."""
        plan = self._plan_for(module, x, args, kwargs or {})
        if plan is None:
            return None
        k_in, v_in = (x, x) if self.kv_source is None else self.kv_source(x)
        return plan.run(module, x, k_in, v_in, self.wants_upcast(module))

    def _plan_for(self, module, x, args, kwargs) -> Optional[Plan]:
        """The plan for one attn1 call, or None to chain to the original forward."""
        block_input = self._block_inputs.pop(module, None)  # taken once: never a stale one
        info = self.index.get(module) if self.index is not None else None
        if info is None or self.latent_hw is None or x.dim() != 3:
            return None
        args, kwargs = _self_context_dropped(x, args, kwargs)
        if any(a is not None for a in args) or any(kwargs.get(k) is not None for k in _FOREIGN_INPUTS):
            context = args[0] if args else kwargs.get("context")
            if isinstance(context, torch.Tensor) and context.dim() == 3 and context.shape[1] > x.shape[1]:
                self.note("ControlNet reference (or another extension) adds tokens to the self-attention of "
                          "some layers; those calls are left unchanged")
            return None  # cross-attention, masks, extra tokens: not ours to change
        if kwargs.get("n_times_crossframe_attn_in_self"):
            return None
        grid = self.index.grid(x.shape[1], self.latent_hw)
        if grid is None:
            self.note(f"{info.name}: {x.shape[1]} tokens match no grid of the "
                      f"{self.latent_hw[0]}x{self.latent_hw[1]} latent (merged by another extension?); left unchanged")
            if not self.interceptors and not self.guidances:
                return None
            # interceptors and guidances still see it (SAG records its map under Kohya-style shrinks and
            # factorises the grid later); planners never run without a grid
        if block_input is not None and block_input.shape[:2] != x.shape[:2]:
            block_input = None  # something between the block and attn1 changed the tokens
        call = LayerCall(info.block, grid, x.shape[0], self.step, self.total, self.seed, block_input)
        plan = self._intercepted(module, info, x, call)
        if plan is None and grid is not None:
            plan = methods.plan_layer(self._plan_settings, call)
        if plan is not None:
            self.rewritten[info.name] += 1
        if grid is not None:
            self.idle.see(call, self.latent_hw, self.notes)
        if self.recorder is not None and grid is not None:
            self.recorder.layer(call, plan, self.latent_hw)
        return plan

    def _intercepted(self, module, info, x, call) -> Optional[Plan]:
        """A plan from an interceptor, or from the guidances: during a guidance's extra call its
        perturbation only, otherwise every guidance's recording."""
        for interceptor in self.interceptors:
            plan = interceptor(module, info, x, call)
            if plan is not None:
                return plan
        if self._extra_of is not None:
            return self._extra_of.perturb_plan(module, info, x, call)
        for guidance in self.guidances:
            plan = guidance.record_plan(module, info, x, call)
            if plan is not None:
                return plan
        return None

    def planned(self, call: LayerCall) -> Optional[Plan]:
        """The planners' plan for a call (None = the original forward's computation): what a guidance
        that takes over only some rows of a call (the batched perturbed rows) runs on the others."""
        return methods.plan_layer(self._plan_settings, call) if call.grid is not None else None

    def wants_upcast(self, module) -> bool:
        """Whether rewritten attention of this layer runs in fp32: forced by upcast_attention, else
        the WebUI's choice (upcast_for), else the layer's own attn_precision (ldm_patched)."""
        if self.settings.upcast_attention:
            return True
        if self.upcast_for is not None:
            return bool(self.upcast_for(module))
        return getattr(module, "attn_precision", None) is torch.float32
