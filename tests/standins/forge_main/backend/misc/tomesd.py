"""Stand-in of Forge main's ``backend/misc/tomesd.py`` (commit dfdcbab6): the WebUI's token merging.

``TomePatcher().patch(model, ratio)`` clones the UnetPatcher and registers two closures defined
in ``patch`` (so their ``__module__`` is this module's name, ``backend.misc.tomesd``, as in Forge):
an attn1_patch ``tomesd_m(q, k, v, extra_options)`` that merges the *query* tokens only
(``return m(q), k, v``: context and value stay the unmerged tokens) and an attn1_output_patch
``tomesd_u(n, extra_options)`` that unmerges. Merging happens only at downsample 1
(``max_downsample = 1``, derived from ``extra_options["original_shape"]``) with stride 2x2 and
``r = int(tokens * ratio)``; deeper layers get the identity. The bipartite matching itself is the
real ``tomesd`` 0.1.3 ``bipartite_soft_matching_random2d`` (Forge main's file is a copy of it).
"""
import math

import torch
from tomesd.merge import bipartite_soft_matching_random2d


def _identity(x, mode=None):
    return x


def get_functions(x, ratio, original_shape):
    _, _, original_h, original_w = original_shape
    downsample = int(math.ceil(math.sqrt((original_h * original_w) // x.shape[1])))
    if downsample > 1:
        return _identity, _identity
    w, h = int(math.ceil(original_w / downsample)), int(math.ceil(original_h / downsample))
    generator = torch.Generator(device=x.device).manual_seed(0)
    return bipartite_soft_matching_random2d(x, w, h, 2, 2, int(x.shape[1] * ratio), no_rand=False,
                                            generator=generator)


class TomePatcher:
    def __init__(self):
        self.u = None

    def patch(self, model, ratio):
        def tomesd_m(q, k, v, extra_options):
            m, self.u = get_functions(q, ratio, extra_options["original_shape"])
            return m(q), k, v

        def tomesd_u(n, extra_options):
            return self.u(n)

        m = model.clone()
        m.set_model_attn1_patch(tomesd_m)
        m.set_model_attn1_output_patch(tomesd_u)
        return m
