"""Measure every documented difference from the original nodes and authors' code on a small case.

    .venv/bin/python tests/tools/differences.py          # about a minute on 2 CPU cores

Prints one line per row of the README's "Differences from the original nodes" table. The case: the
tiny real ldm UNet of the tests (tests/unets.py: SD1.5 layout, model_channels 32, random weights,
seed 0), batch 2, timestep 500, one UNet call, unless a row says otherwise. Each row compares our
output with the original's behaviour, rebuilt here from its documented semantics by swapping one
engine function for the original's rule (this file only; nothing here ships).

    rel-L2     = |ours - original| / |ours|               (of the UNet output)
    of effect  = |ours - original| / |ours - unpatched|   (share of the method's own effect)

No WebUI or gradio import: torch, the ldm package, tomesd and lib_sloth only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import lib_sloth.geometry as geometry  # noqa: E402
import lib_sloth.nearsighted as nearsighted  # noqa: E402
import lib_sloth.schedule as schedule  # noqa: E402
import lib_sloth.methods as methods_module  # noqa: E402
import lib_sloth.sag_mask as sag_mask  # noqa: E402
import lib_sloth.slothful as slothful  # noqa: E402
from lib_sloth import SlothPatch, settings_from_dict  # noqa: E402
from lib_sloth.schedule import progress, time_ratio  # noqa: E402
from lib_sloth.sag import SagSettings  # noqa: E402
from lib_sloth.tome import match  # noqa: E402
from unets import randomise, sd15_unet, unet_inputs  # noqa: E402

torch.set_num_threads(1)


def row(name, ours, theirs, plain=None):
    d = float((ours - theirs).norm())
    rel = d / float(ours.norm())
    share = d / float((ours - plain).norm()) if plain is not None else float("nan")
    print(f"{name:<24} rel-L2 {rel:8.4f}   of effect {share:8.4f}", flush=True)


@contextmanager
def swapped(module, name, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@contextmanager
def calls_seen_as(change):
    """Every layer call reaches the planners changed by `change(call)` (e.g. another level)."""
    plan_layer = methods_module.plan_layer
    with swapped(methods_module, "plan_layer", lambda s, call: plan_layer(s, change(call))):
        yield


def at_level(call, level):
    """The same call, seen as one at another level (the original's depth rule)."""
    return dataclasses.replace(call, grid=dataclasses.replace(call.grid, level=level))


def forward(unet, x, t, c, data=None, step=4, total=10, seed=0):
    with torch.no_grad():
        if data is None:
            return unet(x, t, c)
        with SlothPatch(unet, settings_from_dict(data), seed=seed) as p:
            p.set_step(step, total)
            return unet(x, t, c)


def constant_nsa(block, tile=24, ratio=0.5, **extra):
    """Near-sighted Attention with the schedule off (one tile size and global ratio at every step),
    `block` as both its input and output pooling."""
    return {"nearsighted": {"enabled": True, "time_decay": 0.0, "base_tile_size": tile, "peak_tile_size": tile,
                            "base_global_ratio": ratio, "peak_global_ratio": ratio, "input": block, "output": block,
                            **extra}}


def compare(label, unet, inputs, data, plain, *swaps):
    """One row: ours against the same call with each (module, name, value) of `swaps` swapped in."""
    ours = forward(unet, *inputs, data)
    with contextlib.ExitStack() as stack:
        for module, name, value in swaps:
            stack.enter_context(swapped(module, name, value))
        theirs = forward(unet, *inputs, data)
    row(label, ours, theirs, plain)


def constant(data_block):
    """Slothful/Near-sighted settings with the schedule switched off (same strength at every step)."""
    return {**data_block, "peak_time": 0.4, "time_decay": 0.0}


def main():
    unet = sd15_unet(seed=0)
    x, t, c = unet_inputs(unet, 2, 40, 40)
    plain = forward(unet, x, t, c)

    # ---- Slothful -------------------------------------------------------------------------------
    s = {"slothful": constant({"enabled": True, "input": {"slothful": 6.0}, "output": {"slothful": 4.0}})}
    ours = forward(unet, x, t, c, s)
    swap = {"slothful": constant({"enabled": True, "input": {"slothful": 4.0}, "output": {"slothful": 6.0}})}
    row("strength swap", ours, forward(unet, x, t, c, swap), plain)

    reduce_tokens = slothful.reduce_tokens

    def whole_windows_only(xx, h, w, pooling):
        """The node with a blend > 0: pooling without ceil_mode keeps whole windows only, the pick is
        cropped to match (a blend of 0 keeps every pick, newer node)."""
        k_src, v_src = reduce_tokens(xx, h, w, pooling)
        if pooling.k_blend == 0 and pooling.v_blend == 0:
            return k_src, v_src
        sy, sx = pooling.window
        if pooling.mode.startswith("2D"):
            keep_y, keep_x = h // sy, w // sx
            all_y, all_x = -(-h // sy), -(-w // sx)
            keep = lambda s_: s_.view(s_.shape[0], all_y, all_x, -1)[:, :keep_y, :keep_x].reshape(  # noqa: E731
                s_.shape[0], -1, s_.shape[-1])
        else:
            n_keep = (h * w) // sx
            keep = lambda s_: s_[:, :n_keep]  # noqa: E731
        return keep(k_src), keep(v_src)

    s = {"slothful": constant({"enabled": True, "input": {"slothful": 6.0, "k_blend": 0.5, "v_blend": 0.5},
                               "output": {"slothful": 6.0, "k_blend": 0.5, "v_blend": 0.5}})}
    ours = forward(unet, x, t, c, s)
    with swapped(slothful, "reduce_tokens", whole_windows_only):
        node = forward(unet, x, t, c, s)
    row("edge windows", ours, node, plain)

    def pick_when_both_blends_are_one(xx, h, w, pooling):
        if pooling.k_blend == 1 and pooling.v_blend == 1:
            pooling = dataclasses.replace(pooling, k_blend=0.0, v_blend=0.0)
        return reduce_tokens(xx, h, w, pooling)

    s = {"slothful": constant({"enabled": True, "input": {"slothful": 6.0, "k_blend": 1.0, "v_blend": 1.0},
                               "output": {"slothful": 6.0, "k_blend": 1.0, "v_blend": 1.0}})}
    ours = forward(unet, x, t, c, s)
    with swapped(slothful, "reduce_tokens", pick_when_both_blends_are_one):
        node = forward(unet, x, t, c, s)
    row("v1 blend 1", ours, node, plain)

    # middle block level: ours 3 (its real downsample), the node 2 (channel ratio 4 = 2^2)
    s = {"slothful": constant({"enabled": True, "keep_middle": False, "input": {"slothful": 6.0, "depth_decay": 1.0},
                               "output": {"slothful": 4.0, "depth_decay": 1.0}})}
    ours = forward(unet, x, t, c, s)
    with calls_seen_as(lambda call: at_level(call, 2) if call.block == "middle" else call):
        node = forward(unet, x, t, c, s)
    row("middle level", ours, node, plain)

    # window clip order: ours before this round computed sx from the unclipped sy
    wide = torch.randn(2, 4, 32, 128, generator=torch.Generator().manual_seed(3))
    tw = torch.full((2,), 500, dtype=torch.long)
    plain_wide = forward(unet, wide, tw, c)
    s = {"slothful": constant({"enabled": True, "keep_middle": False, "input": {"slothful": 20.0, "depth_decay": 0.0},
                               "output": {"slothful": 20.0, "depth_decay": 0.0}})}
    ours = forward(unet, wide, tw, c, s)

    def unclipped_sx(stride, h, w):
        sy = math.ceil(math.sqrt(stride))
        return min(sy, h), min(math.ceil(stride / sy), w)

    with swapped(slothful, "window_2d", unclipped_sx):
        before = forward(unet, wide, tw, c, s)
    row("clip order (old)", ours, before, plain_wide)

    # SD2.x: the node's is_xl = (n_heads != 8) doubles the depth rate of 64-wide-head models
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    sd2 = randomise(UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=64, num_res_blocks=1,
                              attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_head_channels=64,
                              use_spatial_transformer=True, transformer_depth=1, context_dim=64,
                              use_linear_in_transformer=True, legacy=False), seed=0)
    x2, t2, c2 = unet_inputs(sd2, 2, 40, 40)
    s = {"slothful": constant({"enabled": True})}
    ours = forward(sd2, x2, t2, c2, s)
    with calls_seen_as(lambda call: at_level(call, call.level - 1)):
        node = forward(sd2, x2, t2, c2, s)
    row("SD2 is_xl", ours, node, forward(sd2, x2, t2, c2))

    # ---- schedule clock ---------------------------------------------------------------------------
    sig = karras_sigmas(20)
    node_time = [1 - sd_timestep(float(v)) / 1000 for v in sig[:-1]]
    ours_p = [progress(i, 20) for i in range(20)]
    i = 13
    print(f"{'clock':<24} Karras 20 steps, step {i}: node time {node_time[i]:.3f} -> time ratio "
          f"{time_ratio(node_time[i], 0.4, 2.0):.2f}; ours progress {ours_p[i]:.3f} -> {time_ratio(ours_p[i], 0.4, 2.0):.2f}")
    s = {"slothful": {"enabled": True}}
    ours = forward(unet, x, t, c, s, step=i, total=20)
    node = forward(unet, x, t, c, s, step=round(node_time[i] * 1000), total=1001)
    row("clock", ours, node, plain)

    # ---- Near-sighted Tile ------------------------------------------------------------------------
    tile = {"tile": {"enabled": True, "tile_size": 16, "global_ratio": 0.5}}
    no_offsets = lambda grid, rng: grid  # noqa: E731  (the node's padding sits at the end)
    with swapped(nearsighted, "with_offsets", no_offsets):
        ours = forward(unet, x, t, c, tile)
        with swapped(nearsighted, "tile_attention", zero_padded_tiles):
            node = forward(unet, x, t, c, tile)
    row("padding", ours, node, plain)

    ours = forward(unet, x, t, c, tile)
    window_2d = nearsighted.window_2d
    with swapped(nearsighted, "window_2d", lambda st, h, w: window_2d(st, h, w)[::-1]):
        node = forward(unet, x, t, c, tile)
    row("v1 swapped window", ours, node, plain)

    # ---- Near-sighted Attention's global sample (follows the node now) ---------------------------
    big = torch.randn(2, 4, 48, 48, generator=torch.Generator().manual_seed(4))
    plain_big = forward(unet, big, tw, c)
    for label, block in (("2D_MAX", {"mode": "2D_MAX", "slothful": 6.0, "k_blend": 0.5, "v_blend": 0.5}),
                         ("1D_AVG", {"mode": "1D_AVG", "slothful": 6.0})):
        compare(f"NSA global (old) {label}", unet, (big, tw, c), constant_nsa(block, keep_middle=False), plain_big,
                (nearsighted, "global_sources", strided_2d_pick))

    # ---- Near-sighted Attention: seams, padding, global edge windows, interpolation --------------
    nsa = {"nearsighted": {"enabled": True, "time_decay": 0.0, "base_tile_size": 16, "peak_tile_size": 16}}
    ours = forward(unet, x, t, c, nsa, step=6)  # step 6: offsets (2, 1) at level 0 (step 4 draws (0, 0))
    with swapped(nearsighted, "with_offsets", no_offsets):
        bottom_right = forward(unet, x, t, c, nsa, step=6)  # the newer node draws offsets, never uses them
        with swapped(nearsighted, "nearsighted_attention", zero_padded_nsa):
            node = forward(unet, x, t, c, nsa, step=6)
    row("NSA seams", ours, bottom_right, plain)
    row("NSA padding", bottom_right, node, plain)
    row("NSA seams + padding", ours, node, plain)

    # 56 x 56, tile 24 (3 x 3 tiles), strength 6, global 0.5: global window (11, 10), local (3, 2); the
    # last picked row (55) has no whole window below it (1D: step 108, window 6, last pick 3132 of 3136)
    x56 = torch.randn(2, 4, 56, 56, generator=torch.Generator().manual_seed(5))
    plain56 = forward(unet, x56, tw, c)
    for mode in ("2D_AVG", "2D_MAX", "1D_AVG"):
        block = {"mode": mode, "slothful": 6.0, "k_blend": 0.5, "v_blend": 0.5}
        compare(f"NSA global edges {mode}", unet, (x56, tw, c), constant_nsa(block), plain56,
                (nearsighted, "global_sources", global_whole_windows_only))

    for mode in ("2D_AVG", "1D_AVG"):
        s = constant_nsa({"mode": mode, "slothful": 4.5}, base_global_ratio=0.2, peak_global_ratio=0.9)
        compare(f"NSA lerp (old) {mode}", unet, (big, tw, c), s, plain_big,
                (schedule, "lerp", lambda a, b, r: a + (b - a) * r), (geometry, "snap", lambda v, eps=0.0: v))

    # ---- AgentSD / ToMe metric --------------------------------------------------------------------
    x32, t32, c32 = unet_inputs(unet, 2, 32, 32)
    plain32 = forward(unet, x32, t32, c32)
    for label, extra in (("early", {}), ("late", {"switch_at": 0.0})):
        s = {"agentsd": {"enabled": True, "use_rand": False, **extra}}
        ours = forward(unet, x32, t32, c32, s, step=0)
        with calls_seen_as(lambda call: dataclasses.replace(call, block_input=None)):
            fallback = forward(unet, x32, t32, c32, s, step=0)
        row(f"metric fallback {label}", ours, fallback, plain32)
    moved = merged_tokens_that_differ(unet, x32, t32, c32)
    print(f"{'metric tokens':<24} merged src tokens that differ at level 0 (2x2 cells, ratio 0.4): {moved:.1%}")
    print(f"{'tomesd':<24} plain ToMe path vs real tomesd 0.1.3 (fp32, use_rand off): max-abs {tome_vs_tomesd():.3g}")

    # ---- SAG blur kernel --------------------------------------------------------------------------
    for sigma in (1.2, 2.0, 3.0):
        ours, base = sag_step(unet, sigma, None), sag_step(unet, 0.0, None, scale=0.0)
        theirs = sag_step(unet, sigma, fixed_9_tap)
        row(f"SAG 9 taps sigma {sigma}", ours, theirs, base)

    seg_rows(unet)


def reference_seg_blur(q, grid_hw, sigma):
    """SEG's query blur by the authors' rule (SusungHong/SEG-SDXL pipeline_seg.py, rebuilt from its
    description): ceil(6 sigma) + 1 taps rounded down to odd, clipped by the grid's *width* only, one 2-D
    kernel (outer product) after reflect padding of kernel // 2 on every side; infinite: the mean."""
    import torch.nn.functional as F

    from lib_sloth.seg import SIGMA_INF

    h, w = grid_hw
    if sigma <= 0:
        return q
    if sigma >= SIGMA_INF:
        return q.mean(dim=1, keepdim=True).expand_as(q)
    span = math.ceil(6 * sigma)
    size = min(span + 1 - span % 2, w - (w % 2 - 1))
    offsets = torch.linspace(-(size - 1) / 2, (size - 1) / 2, size)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    kernel = (taps[:, None] * taps[None, :]).expand(q.shape[-1], 1, size, size)
    img = q.transpose(1, 2).reshape(q.shape[0], q.shape[-1], h, w)
    img = F.conv2d(F.pad(img, [size // 2] * 4, mode="reflect"), kernel, groups=q.shape[-1])
    return img.reshape(q.shape[0], q.shape[-1], h * w).transpose(1, 2)


def seg_rows(unet):
    """SEG's blur per axis vs the reference's width-sized 2-D kernel: the perturbed cond prediction of
    one UNet call (middle block perturbed), as a share of SEG's perturbation (perturbed - cond)."""
    from lib_sloth import seg as seg_module
    from lib_sloth.patch import SlothPatch
    from lib_sloth.settings import SlothSettings

    for hw, sigma in (((32, 32), 1.0), ((32, 48), 1.0), ((48, 32), 1.0), ((16, 48), 1.0)):
        x, t, c = unet_inputs(unet, 2, *hw, seed=3)
        patch = SlothPatch(unet, SlothSettings(), seed=1)
        guidance = seg_module.SegPass(seg_module.SegSettings(enabled=True, blur_sigma=sigma), patch)
        with torch.no_grad(), patch:
            plain = unet(x, t, c)
            with patch.extra_pass(guidance):
                ours = unet(x, t, c)
            try:
                with swapped(seg_module, "blur_queries", reference_seg_blur), patch.extra_pass(guidance):
                    theirs = unet(x, t, c)
            except RuntimeError as err:  # reflect padding wider than the grid's height
                print(f"{'SEG ref ' + 'x'.join(map(str, hw)) + ' sigma ' + str(sigma):<24} reference fails: "
                      f"{str(err).splitlines()[0][:80]}", flush=True)
                continue
        row(f"SEG ref {hw[0]}x{hw[1]} sigma {sigma}", ours, theirs, plain)


# ---- the original's rules, rebuilt from their documented semantics ----------------------------------
def zero_padded_tiles(module, x, k_in, v_in, grid, global_stride, upcast):
    """Near-sighted Tile as the node runs it: the grid zero-padded at the bottom/right to whole tiles,
    every tile's padding cells among its keys and values (to_k(0) = 0: zero keys and values)."""
    from einops import rearrange

    from lib_sloth.attention import attend
    b, n, c = x.shape
    h, w, ty, tx, th, tw = grid.h, grid.w, grid.ty, grid.tx, grid.th, grid.tw
    xg = F.pad(x.view(b, h, w, c), (0, 0, 0, tx * tw - w, 0, ty * th - h))
    tiles = rearrange(xg, "b (ty th) (tx tw) c -> (b ty tx) (th tw) c", ty=ty, tx=tx)
    q, k, v = module.to_q(tiles), module.to_k(tiles), module.to_v(tiles)
    if global_stride is not None:
        gy, gx = nearsighted.window_2d(global_stride, h, w)
        picked = x.view(b, h, w, c)[:, ::gy, ::gx].reshape(b, -1, c)
        gk = module.to_k(picked).repeat_interleave(ty * tx, 0)
        gv = module.to_v(picked).repeat_interleave(ty * tx, 0)
        k, v = torch.cat([k, gk], 1), torch.cat([v, gv], 1)
    out = attend(q, k, v, module.heads, upcast)
    out = rearrange(out, "(b ty tx) (th tw) c -> b (ty th) (tx tw) c", ty=ty, tx=tx, th=th, tw=tw)
    return out[:, :h, :w].reshape(b, n, -1)


def zero_padded_nsa(module, x, k_in, v_in, grid, global_stride, pool_block, pool_stride, upcast):
    """Near-sighted Attention as the newer node runs it: the grid zero-padded at the bottom/right to
    whole tiles, each padded th x tw tile pooled as a whole (padding cells among its queries, keys and
    values), then the global sample of the unpadded image appended (as ours)."""
    from einops import rearrange

    from lib_sloth.attention import attend
    b, n, c = x.shape
    h, w, ty, tx, th, tw = grid.h, grid.w, grid.ty, grid.tx, grid.th, grid.tw
    xg = F.pad(x.view(b, h, w, c), (0, 0, 0, tx * tw - w, 0, ty * th - h))
    tiles = rearrange(xg, "b (ty th) (tx tw) c -> (b ty tx) (th tw) c", ty=ty, tx=tx)
    pooling = slothful.pooling_for(pool_block, pool_stride, th, tw)
    k_src, v_src = (tiles, tiles) if pooling is None else slothful.reduce_tokens(tiles, th, tw, pooling)
    q, k, v = module.to_q(tiles), module.to_k(k_src), module.to_v(v_src)
    if global_stride is not None:
        gk_src, gv_src = nearsighted.global_sources(x, h, w, global_stride, pool_block, pool_stride)
        k = torch.cat([k, module.to_k(gk_src).repeat_interleave(ty * tx, 0)], 1)
        v = torch.cat([v, module.to_v(gv_src).repeat_interleave(ty * tx, 0)], 1)
    out = attend(q, k, v, module.heads, upcast)
    out = rearrange(out, "(b ty tx) (th tw) c -> b (ty th) (tx tw) c", ty=ty, tx=tx, th=th, tw=tw)
    return out[:, :h, :w].reshape(b, n, -1)


def global_whole_windows_only(x, h, w, global_stride, block, local_stride, _ours=nearsighted.global_sources):
    """The newer node's global sample with a blend > 0: its pooling (no ceil_mode) keeps only the
    windows of the local size that fit inside the image, and the pick is cropped to match."""
    k_src, v_src = _ours(x, h, w, global_stride, block, local_stride)
    if (block.k_blend == 0 and block.v_blend == 0) or local_stride <= 1:
        return k_src, v_src
    b, c = x.shape[0], x.shape[-1]
    if block.mode.startswith("2D"):
        (gy, gx), (ky, kx) = nearsighted.window_2d(global_stride, h, w), nearsighted.window_2d(local_stride, h, w)
        all_y, all_x = -(-h // gy), -(-w // gx)
        keep_y, keep_x = (h - ky) // gy + 1, (w - kx) // gx + 1
        keep = lambda s_: s_.view(b, all_y, all_x, c)[:, :keep_y, :keep_x].reshape(b, -1, c)  # noqa: E731
    else:
        n = h * w
        g, k = nearsighted.window_1d(global_stride, n), nearsighted.window_1d(local_stride, n)
        keep = lambda s_: s_[:, :(n - k) // g + 1]  # noqa: E731
    return keep(k_src), keep(v_src)


def strided_2d_pick(x, h, w, global_stride, block, local_stride):
    """Our Near-sighted Attention global sample before this round: a plain 2D strided pick."""
    b, n, c = x.shape
    gy, gx = nearsighted.window_2d(global_stride, h, w)
    picked = x.view(b, h, w, c)[:, ::gy, ::gx].reshape(b, -1, c)
    return picked, picked


def fixed_9_tap(sigma):
    """ComfyUI/Forge SAG's blur: a 9-tap Gaussian at offsets -4..4 whatever sigma is."""
    if sigma <= 0:
        return None
    offsets = torch.linspace(-4, 4, 9)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def sag_step(unet, sigma, kernel, scale=1.0):
    """A 4-step Euler run with SAG (scale 1) on the test sampler: the final latent."""
    from sampling import run as sample

    sag = SagSettings(enabled=True, scale=scale, blur_sigma=sigma)
    if kernel is None:
        return sample(unet, sag_settings=sag, batch=2, hw=(32, 32), context_dim=768)[0]
    with swapped(sag_mask, "gaussian_kernel1d", kernel):
        return sample(unet, sag_settings=sag, batch=2, hw=(32, 32), context_dim=768)[0]


def karras_sigmas(n, sigma_min=0.0292, sigma_max=14.6146, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def sd_timestep(sigma):
    """The SD1.x discrete timestep nearest to sigma in log space (ComfyUI's model_sampling.timestep)."""
    from sampling import sd_alphas_cumprod

    acp = sd_alphas_cumprod().double()
    log_sigmas = ((1 - acp) / acp).sqrt().log()
    return int((log_sigmas - math.log(sigma)).abs().argmin())


def merged_tokens_that_differ(unet, x, t, c):
    block = unet.input_blocks[1][1].transformer_blocks[0]  # level 0
    seen = []
    hook = block.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        forward(unet, x, t, c)
    finally:
        hook.remove()
    with torch.no_grad():
        n1 = block.norm1(seen[0])
    r = int(32 * 32 * 0.4)
    sets = [set(match(m, 32, 32, 2, 2).order[0, :r].tolist()) for m in (seen[0], n1)]
    return 1 - len(sets[0] & sets[1]) / r


def tome_vs_tomesd():
    import tomesd
    from ldm.modules.attention import CrossAttention
    from test_agentsd import PLAIN_TOME, _Holder, sdp_forward

    unet = sd15_unet(seed=5)
    x, t, c = unet_inputs(unet, 2, 32, 32)
    with swapped(CrossAttention, "forward", sdp_forward):
        holder = _Holder(unet)
        tomesd.apply_patch(holder, ratio=0.4, max_downsample=1, sx=2, sy=2, use_rand=False)
        try:
            theirs = forward(unet, x, t, c)
        finally:
            tomesd.remove_patch(holder)
        ours = forward(unet, x, t, c, PLAIN_TOME, step=0)
    return float((ours - theirs).abs().max())


if __name__ == "__main__":
    main()
