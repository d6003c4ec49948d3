"""The one attention kernel every rewrite calls: heads split, SDPA, heads merged."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, upcast: bool = False) -> torch.Tensor:
    """Multi-head softmax attention.

    q: [B, Nq, heads*d], k and v: [B, Nk, heads*d] -> [B, Nq, heads*d] in q's dtype.
    `upcast` computes in fp32 (fp16 overflows in some SD2.x layers).
    """
    b, nq, inner = q.shape
    d = inner // heads
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, nq, inner).to(dtype)


def kv_inputs(module, x: torch.Tensor):
    """(k_in, v_in): what this layer's K and V are computed from, per token of x.

    (x, x) for a plain layer. A front end can give the patch a K/V source (A1111's hypernetworks
    transform the self-attention context before to_k / to_v); the patch then hands the rewrites a
    `WithKVSource` view of the layer, and every rewrite projects K from k_in and V from v_in
    (pooling, tiling or merging them exactly as it would x). Identity is kept: a source that
    leaves x alone returns x itself, so rewrites can skip the extra work.
    """
    source = getattr(module, "sloth_kv_source", None)
    return (x, x) if source is None else source(x)


class WithKVSource:
    """A layer seen through a K/V source: every attribute is the layer's, plus the source."""

    def __init__(self, module, source):
        self.__dict__["_module"] = module
        self.__dict__["sloth_kv_source"] = source

    def __getattr__(self, name):
        return getattr(self.__dict__["_module"], name)

    def __call__(self, *args, **kwargs):
        return self.__dict__["_module"](*args, **kwargs)


def autocast_off(device_type: str):
    """A context that turns autocast off on `device_type`, valid on every device torch >= 2.1 runs on.

    torch before 2.5 has no MPS autocast and refuses even `torch.autocast("mps", enabled=False)`
    (RuntimeError "unsupported autocast device_type"); where autocast does not exist it cannot be
    on either, so nothing needs turning off.
    """
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()
