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
