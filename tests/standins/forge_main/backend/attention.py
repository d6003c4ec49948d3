"""Stand-in of Forge main's ``backend/attention.py`` (commit dfdcbab6).

Forge main picks one ``attention_function(q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False)`` at import (xformers, pytorch SDP, split or sub-quadratic); q/k/v are
``[B, N, heads*dim_head]``. Here it is ComfyUI 0.3.75's ``optimized_attention`` (the real kernel
selection, SDP on the CPU), which takes the same arguments.
"""
import comfy.ldm.modules.attention as _comfy_attention


def attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False):
    return _comfy_attention.optimized_attention(q, k, v, heads, mask=mask, attn_precision=attn_precision,
                                               skip_reshape=skip_reshape)


def get_attn_precision(attn_precision=None):
    return attn_precision
