"""Stand-in for A1111 v1.10.1 ``modules/sd_hijack_optimizations.py`` (written from the API, not the real code).

Only ``scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs)``, the
"sdp" optimisation A1111 installs as ``CrossAttention.forward`` (ldm and sgm) by default:
q from x; the context defaults to x; K and V come from
``hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)`` (K from the first,
V from the second); with ``opts.upcast_attn`` q, k, v are cast to float32 before
``torch.nn.functional.scaled_dot_product_attention`` and the result back to q's dtype; then
``to_out``. Tests install it the way ``apply_optimizations`` does (class attribute).
"""
import torch

from modules import shared
from modules.hypernetworks import hypernetwork


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    b, n, inner = x.shape[0], x.shape[1], self.to_q.out_features
    heads = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)
    k, v = self.to_k(context_k), self.to_v(context_v)
    q, k, v = (t.view(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    dtype = q.dtype
    if shared.opts.upcast_attn:
        q, k, v = q.float(), k.float(), v.float()
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(b, n, inner).to(dtype)
    return self.to_out(out)
