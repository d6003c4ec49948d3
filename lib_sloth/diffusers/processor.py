"""The Sloth attention processor: one per attn1, wrapping the processor that was installed.

A call Sloth does not rewrite (cross-attention, masks, extra inputs, a layer or step the
settings leave alone, a processor we do not know) goes to the wrapped processor with exactly
the arguments received, so neutral settings are bit-identical and SDPA, xformers, sliced,
LoRA-carrying layers and other people's processors keep working. A rewritten call computes the
same pre- and post-processing diffusers' AttnProcessor2_0 does around the attention (spatial
norm, 4-D inputs, group norm, residual connection, rescale_output_factor) and the engine's plan
in between.
"""
from __future__ import annotations

import inspect
from typing import Callable, List, Optional

import torch
from torch import nn

from .. import methods
from ..patch import SlothPatch
from ._engine import LayerView, views

# Processors that compute plain softmax attention from to_q / to_k / to_v and apply to_out, so a
# rewrite of the attention replaces them faithfully. Any other processor is chained, never bypassed.
PLAIN_PROCESSORS = frozenset({"AttnProcessor", "AttnProcessor2_0", "XFormersAttnProcessor", "SlicedAttnProcessor",
                              "AttnProcessorNPU", "FusedAttnProcessor2_0", "XLAFlashAttnProcessor2_0"})


def rewritable(attn: nn.Module, processor) -> Optional[str]:
    """Why this layer's calls are always left to its processor, or None when Sloth may rewrite them."""
    name = type(processor).__name__
    if name not in PLAIN_PROCESSORS:
        return f"its processor {name} is not plain attention"
    if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
        return "it normalises q and k"
    head_dim = attn.to_q.out_features // attn.heads if hasattr(attn.to_q, "out_features") else None
    if head_dim and abs(float(getattr(attn, "scale", head_dim ** -0.5)) - head_dim ** -0.5) > 1e-12:
        return "its attention scale is not 1/sqrt(head_dim)"
    return None


class SlothProcessor:
    """Wraps `inner`, the processor attn1 had; `active` False (after the block ends) = pure chaining."""

    def __init__(self, inner, view: LayerView, patch: SlothPatch, rewrite: bool):
        self.inner = inner
        self.view = view
        self.patch = patch
        self.rewrite = rewrite
        self.active = True
        # Attention.forward passes only the cross_attention_kwargs that its processor's __call__
        # names (inspect.signature(processor.__call__)): show it the wrapped processor's signature,
        # so exactly the arguments (and warnings) the wrapped processor would get reach us.
        def signature_only(*args, **kwargs):
            return type(self).__call__(self, *args, **kwargs)

        signature_only.__signature__ = inspect.signature(inner.__call__)
        self.__dict__["__call__"] = signature_only

    def __call__(self, attn, hidden_states, *args, **kwargs):
        if self.active and self.rewrite and not args and _plain_call(kwargs) and hidden_states.ndim in (3, 4):
            out = self._rewritten(attn, hidden_states, kwargs.get("temb"))
            if out is not None:
                return out
        return self.inner(attn, hidden_states, *args, **kwargs)

    def _rewritten(self, attn, hidden_states, temb) -> Optional[torch.Tensor]:
        """AttnProcessor2_0's steps around the engine's attention; None when nothing plans this call."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape4 = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape4 is not None:
            b, c, h, w = shape4
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        out = self.patch.attention_call(self.view, hidden_states)
        if out is None:
            return None
        if shape4 is not None:
            out = out.transpose(-1, -2).reshape(shape4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _plain_call(kwargs) -> bool:
    """Self-attention with no context, mask or extra inputs (temb only feeds a spatial norm)."""
    return all(value is None for key, value in kwargs.items() if key != "temb")


def install(patch: SlothPatch) -> Callable[[], None]:
    """Wrap the processor of every attn1 the patch indexes; returns the undo (see `restore`)."""
    wrappers: List[tuple] = []
    left: dict = {}
    try:
        for attn, view in views(patch).items():
            inner = attn.get_processor() if hasattr(attn, "get_processor") else attn.processor
            reason = rewritable(attn, inner)
            if reason is not None:
                left[reason] = left.get(reason, 0) + 1
            wrapper = SlothProcessor(inner, view, patch, rewrite=reason is None)
            attn.set_processor(wrapper)
            wrappers.append((attn, wrapper))
    except BaseException:
        restore(patch, wrappers)
        raise
    for reason, count in left.items():
        patch.note(f"{count} self-attention layers are left unchanged: {reason}")
    _skip_blocked_guidances(patch, {(patch.index.get(w.view).block, patch.index.get(w.view).index)
                                    for _, w in wrappers if not w.rewrite})
    return lambda: restore(patch, wrappers)


def _skip_blocked_guidances(patch: SlothPatch, left_places) -> None:
    """A guidance that needs a layer Sloth cannot see run (SAG's map on the middle block's first
    attn1) leaves the pass, with a note, rather than guide without it."""
    for guidance in list(patch.guidances):
        blocked = sorted(left_places & set(guidance.needs_layers))
        if blocked:
            title = methods.method_of(guidance).title
            places = ", ".join(f"{block} {index}" for block, index in blocked)
            patch.note(f"{title} skipped: the self-attention layer it needs ({places}) has a processor Sloth "
                       "does not rewrite")
            guidance.close()


def restore(patch: SlothPatch, wrappers) -> None:
    """Put every wrapped processor back. A layer whose processor was replaced while Sloth was on
    keeps the newer one (the user's choice; a note says so); our wrapper, if something still
    chains to it, only chains from now on."""
    replaced = 0
    for attn, wrapper in wrappers:
        wrapper.active = False
        if attn.processor is wrapper:
            attn.set_processor(wrapper.inner)
        else:
            replaced += 1
    wrappers.clear()
    if replaced:
        patch.note(f"the attention processors of {replaced} self-attention layers were replaced while Sloth "
                   "was on; those were kept, not restored")
