"""AgentSD: ToMe merging equal to tomesd's, agent attention equal to its equations, and the
patch on real ldm UNets (effect, schedule, restoration, coexistence with tomesd)."""
import dataclasses

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings as hyp_settings, strategies as st
from ldm.modules.attention import BasicTransformerBlock, CrossAttention
from tomesd.merge import bipartite_soft_matching_random2d as tomesd_matching

from lib_sloth import SlothPatch, settings_from_dict
from lib_sloth.agentsd import AgentSDPlan, agent_attention, agentsd_attention, layer_plan, merge_seed, phase_at
from lib_sloth.fields import SettingsError
from lib_sloth.layer_call import LayerCall, TokenGrid
from lib_sloth.methods import plan_layer
from lib_sloth.tome import bipartite_soft_matching, match
from noise import assert_near_truth
from unets import sd15_unet, unet_inputs

AGENTSD = {"agentsd.enabled": True}


# ---- helpers ----------------------------------------------------------------------------------
def canonical_order(merge, b, n):
    """Merged rows sorted by the first grid position they contain: orders differ, groups must not.

    Returns (weights [B, M, N] of each merged row over the grid, in canonical order; the order).
    """
    weights = merge(torch.eye(n).expand(b, n, n))
    order = (weights > 0).float().argmax(-1).argsort(-1)
    return rows(weights, order), order


def rows(t, index):
    return t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))


def call(level=0, h=24, w=24, batch=2, step=0, total=10, seed=1, block="input"):
    return LayerCall(block, TokenGrid(h, w, level), batch, step, total, seed)


def run(unet, x, t, c, settings=None, step=0, total=10, seed=7):
    with torch.no_grad():
        if settings is None:
            return unet(x, t, c), None
        with SlothPatch(unet, settings, seed=seed) as patch:
            patch.set_step(step, total)
            return unet(x, t, c), patch


def snapshot(unet):
    """Everything a patch could leave behind: classes, attributes, hooks, forwards, weights."""
    modules = {name: (type(m), sorted(m.__dict__), len(m._forward_pre_hooks), len(m._forward_hooks))
               for name, m in unet.named_modules()}
    forwards = {cls: cls.__dict__.get("forward") for cls in (CrossAttention, BasicTransformerBlock)}
    return modules, forwards, {k: v.clone() for k, v in unet.state_dict().items()}


def assert_same_snapshot(before, after):
    assert before[0] == after[0] and before[1] == after[1]
    assert before[2].keys() == after[2].keys()
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


# ---- ToMe against tomesd 0.1.3 ------------------------------------------------------------------
TOMESD_CASES = [  # (batch, h, w, sx, sy, ratio)
    (1, 16, 16, 2, 2, 0.5),
    (2, 16, 16, 2, 2, 0.5),
    (2, 13, 11, 2, 2, 0.4),  # neither side divisible by the cell
    (1, 15, 17, 4, 4, 0.9),
    (2, 12, 20, 3, 2, 0.6),
    (2, 9, 14, 4, 4, 0.3),
]


@pytest.mark.parametrize("batch,h,w,sx,sy,ratio", TOMESD_CASES)
def test_merge_and_unmerge_equal_tomesd_without_rand(batch, h, w, sx, sy, ratio):
    g = torch.Generator().manual_seed(h * w)
    n, r = h * w, int(h * w * ratio)
    metric, x = torch.randn(batch, n, 24, generator=g), torch.randn(batch, n, 8, generator=g)
    their_merge, their_unmerge = tomesd_matching(metric, w, h, sx, sy, r, no_rand=True)
    our_merge, our_unmerge = bipartite_soft_matching(metric, h, w, sx, sy, r)

    their_groups, their_order = canonical_order(their_merge, batch, n)
    our_groups, our_order = canonical_order(our_merge, batch, n)
    assert torch.equal(our_groups, their_groups)  # same tokens averaged together, same weights
    assert torch.equal(rows(our_merge(x), our_order), rows(their_merge(x), their_order))
    y = torch.randn(batch, n - r, 8, generator=g)  # an attention output, in our merged order
    y_theirs = torch.empty_like(y).scatter_(1, their_order[..., None].expand_as(y), rows(y, our_order))
    assert torch.equal(our_unmerge(y), their_unmerge(y_theirs))


def test_random_destinations_equal_tomesd_for_the_same_generator_state():
    g = torch.Generator().manual_seed(3)
    metric = torch.randn(2, 13 * 18, 16, generator=g)
    theirs, _ = tomesd_matching(metric, 18, 13, 2, 2, 90, generator=torch.Generator().manual_seed(11))
    ours, _ = bipartite_soft_matching(metric, 13, 18, 2, 2, 90, generator=torch.Generator().manual_seed(11))
    assert torch.equal(canonical_order(ours, 2, 13 * 18)[0], canonical_order(theirs, 2, 13 * 18)[0])


def test_random_destinations_same_seed_identical_different_seed_different():
    metric = torch.randn(2, 24 * 24, 16, generator=torch.Generator().manual_seed(0))

    def merged(seed):
        m, _ = bipartite_soft_matching(metric, 24, 24, 4, 4, 200, torch.Generator().manual_seed(seed))
        return m(metric)

    assert torch.equal(merged(merge_seed(5, 3, 0)), merged(merge_seed(5, 3, 0)))
    assert not torch.equal(merged(merge_seed(5, 3, 0)), merged(merge_seed(6, 3, 0)))


def test_merge_seed_depends_on_seed_step_and_level_only():
    plans = {b: layer_plan(settings_from_dict(AGENTSD).agentsd, call(block=b, step=2)) for b in ("input", "output")}
    assert plans["input"].seed == plans["output"].seed == merge_seed(1, 2, 0)  # cond/uncond/blocks agree
    assert len({merge_seed(1, 2, 0), merge_seed(2, 2, 0), merge_seed(1, 3, 0), merge_seed(1, 2, 1)}) == 4


def test_odd_batch_uses_the_first_cell_position():
    s = settings_from_dict(AGENTSD).agentsd
    assert layer_plan(s, call(batch=1)).seed is None and layer_plan(s, call(batch=3)).seed is None
    assert layer_plan(s, call(batch=2)).seed is not None
    assert layer_plan(dataclasses.replace(s, use_rand=False), call(batch=2)).seed is None


@hyp_settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), sx=st.integers(1, 4), sy=st.integers(1, 4),
       r=st.integers(0, 150), batch=st.integers(1, 2))
def test_any_grid_merges_at_most_its_sources_and_unmerges_to_its_shape(h, w, sx, sy, r, batch):
    x = torch.randn(batch, h * w, 4)
    matching = match(x, h, w, sx, sy)
    merge, unmerge = matching.merging(r)
    merged = merge(x)
    assert merged.shape[1] == h * w - min(r, matching.max_merge)
    assert matching.max_merge == (h * w - (h // sy) * (w // sx) if (h // sy) * (w // sx) else 0)
    restored = unmerge(merged)
    assert restored.shape == x.shape
    if r == 0:
        assert torch.equal(restored, x)


# ---- agent attention against its equations -------------------------------------------------------
def reference_agent_attention(q, k, v, a, heads, k_scale2, k_shortcut, dtype=torch.float64):
    q, k, v, a = (rearrange(t.to(dtype), "b n (h d) -> b h n d", h=heads) for t in (q, k, v, a))
    d = q.shape[-1]
    agent_v = torch.softmax(torch.einsum("bhad,bhnd->bhan", a, k) * d ** -0.5, -1) @ v
    weights = torch.softmax(torch.einsum("bhnd,bhad->bhna", q, a) * d ** (-0.5 * k_scale2), -1)
    return rearrange(weights @ agent_v + k_shortcut * v, "b h n d -> b n (h d)")


def random_qkva(dtype, m=70, agents=9, heads=4, d=16, scale=1.0):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, m, heads * d, generator=g) * scale for _ in range(3))
    a = torch.randn(2, agents, heads * d, generator=g) * scale
    return tuple(t.to(dtype) for t in (q, k, v, a))


def test_agent_attention_equals_its_equations_in_fp32():
    q, k, v, a = random_qkva(torch.float32, scale=2.0)
    out = agent_attention(q, k, v, a, heads=4, k_scale2=0.3, k_shortcut=0.075)
    ref = reference_agent_attention(q, k, v, a, 4, 0.3, 0.075)
    assert out.dtype == torch.float32
    peer = reference_agent_attention(q, k, v, a, 4, 0.3, 0.075, dtype=torch.float32)
    assert_near_truth(out, ref, peer, 2.0)  # as close to the float64 equations as they are in fp32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_agent_attention_fp32_option_from_half_inputs_equals_equations_rounded(dtype):
    q, k, v, a = random_qkva(dtype, scale=3.0)
    out = agent_attention(q, k, v, a, heads=4, k_scale2=0.5, k_shortcut=0.2, upcast=True)
    ref = reference_agent_attention(q, k, v, a, 4, 0.5, 0.2)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.to(dtype))  # within the rounding of the output dtype


def test_agentsd_layer_equals_tomesd_merges_around_the_reference_attention():
    torch.manual_seed(0)
    layer = CrossAttention(64, heads=4, dim_head=16).eval()
    h, w = 12, 16
    x = torch.randn(2, h * w, 64)
    s = settings_from_dict({**AGENTSD, "agentsd.use_rand": False}).agentsd
    plan = layer_plan(s, call(h=h, w=w))
    assert plan.agent_r > 0  # the early defaults use agents
    merge, unmerge = tomesd_matching(x, w, h, plan.sx, plan.sy, plan.r, no_rand=True)
    merge_agents, _ = tomesd_matching(x, w, h, plan.sx, plan.sy, plan.agent_r, no_rand=True)
    with torch.no_grad():
        xm = merge(x)
        ref = reference_agent_attention(layer.to_q(xm), layer.to_k(xm), layer.to_v(xm),
                                        layer.to_q(merge_agents(x)), 4, s.k_scale2, s.k_shortcut)
        out = agentsd_attention(layer, x, plan=plan, k_scale2=s.k_scale2, k_shortcut=s.k_shortcut, upcast=False)
        peer = reference_agent_attention(layer.to_q(xm), layer.to_k(xm), layer.to_v(xm),
                                         layer.to_q(merge_agents(x)), 4, s.k_scale2, s.k_shortcut, torch.float32)
    # unmerge only copies and averages rows: as close to the float64 equations as they are in fp32
    assert_near_truth(out, unmerge(ref), unmerge(peer), 2.0)


# ---- the plan: schedule, levels, agents ----------------------------------------------------------
def test_switch_from_early_to_late_at_the_fraction_of_the_pass():
    s = settings_from_dict(AGENTSD).agentsd  # switch_at 0.4
    assert [phase_at(s, i, 50)[0] for i in (0, 19, 20, 49)] == ["early", "early", "late", "late"]
    assert [phase_at(s, i, 10)[0] for i in (3, 4)] == ["early", "late"]  # a shorter (hires) pass
    s3 = dataclasses.replace(s, switch_at=0.3)  # 0.3 * 10 is 3.0000000000000004 in floats
    assert [phase_at(s3, i, 10)[0] for i in (2, 3)] == ["early", "late"]
    assert phase_at(dataclasses.replace(s, switch_at=0.0), 0, 10)[0] == "late"
    assert phase_at(dataclasses.replace(s, switch_at=1.0), 9, 10)[0] == "early"


def test_agents_only_when_fewer_than_half_the_merged_tokens():
    s = settings_from_dict(AGENTSD).agentsd
    early = layer_plan(s, call(step=0))  # 4x4 cells, agent_ratio 0.95: agents = one per cell
    late = layer_plan(s, call(step=9))  # 2x2 cells, agent_ratio 0.5: too many agents -> plain ToMe
    assert (early.phase, early.agents, early.r) == ("early", 24 * 24 // 16, int(24 * 24 * 0.4))
    assert (late.phase, late.agent_r) == ("late", 0)


def test_levels_merged_are_those_within_max_downsample():
    s = settings_from_dict(AGENTSD).agentsd
    assert [layer_plan(s, call(level=lv)) is not None for lv in range(4)] == [True, False, False, False]
    s4 = dataclasses.replace(s, max_downsample=4)
    assert [layer_plan(s4, call(level=lv)) is not None for lv in range(4)] == [True, True, True, False]


def test_ratio_zero_phase_and_grids_without_a_whole_cell_are_left_alone():
    s = settings_from_dict({**AGENTSD, "agentsd.early.ratio": 0.0}).agentsd
    assert layer_plan(s, call(step=0)) is None and layer_plan(s, call(step=9)) is not None
    assert layer_plan(settings_from_dict(AGENTSD).agentsd, call(h=3, w=8)) is None  # 4x4 cells


def test_agentsd_takes_the_layers_it_merges_and_slothful_the_rest():
    # no depth decay: Slothful would act on level 1 by itself (its default decay leaves it too weak)
    both = settings_from_dict({**AGENTSD, "slothful.enabled": True, "slothful.input.depth_decay": 0.0})
    assert plan_layer(settings_from_dict({"slothful.enabled": True, "slothful.input.depth_decay": 0.0}),
                      call(level=0)) is not None  # Slothful alone would take level 0 too
    assert isinstance(plan_layer(both, call(level=0)), AgentSDPlan)
    deeper = plan_layer(both, call(level=1))
    assert deeper is not None and not isinstance(deeper, AgentSDPlan)


def test_agentsd_with_tiling_is_refused_by_validation():
    for other in ("tile.enabled", "nearsighted.enabled"):
        with pytest.raises(SettingsError, match="agentsd"):
            settings_from_dict({**AGENTSD, other: True})


# ---- on the tiny real ldm UNets ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd15_case(sd15):
    x, t, c = unet_inputs(sd15, 2, 24, 24)
    return sd15, x, t, c, run(sd15, x, t, c)[0]


@pytest.fixture(scope="module")
def sdxl_case(sdxl):
    x, t, c = unet_inputs(sdxl, 2, 16, 16)
    return sdxl, x, t, c, run(sdxl, x, t, c)[0]


@pytest.fixture(scope="module")
def default_runs(sd15_case, sdxl_case):
    """(output, patch) of each layout under the default AgentSD settings, early phase."""
    s = settings_from_dict(AGENTSD)
    return {name: (case[4],) + run(*case[:4], s, step=0) for name, case in
            (("sd15", sd15_case), ("sdxl", sdxl_case))}


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_agentsd_output_is_finite_and_differs_from_unpatched(layout, default_runs):
    base, out, _ = default_runs[layout]
    assert torch.isfinite(out).all() and out.shape == base.shape
    assert not torch.allclose(out, base, atol=1e-4)


def test_sdxl_layout_default_max_downsample_merges_its_shallowest_attention_level(default_runs, sdxl):
    _, _, patch = default_runs["sdxl"]
    attn1 = {n: m.to_q.in_features for n, m in sdxl.named_modules() if n.endswith("attn1")}
    shallowest = {n for n, ch in attn1.items() if ch == min(attn1.values())}  # fewest channels = level 0
    assert patch.rewritten and set(patch.rewritten) == shallowest


def test_early_late_switch_takes_effect_at_the_right_step_on_the_unet(sd15_case):
    unet, x, t, c, _ = sd15_case
    s = settings_from_dict({**AGENTSD, "agentsd.use_rand": False})  # output then depends on the phase only
    outs = {step: run(unet, x, t, c, s, step=step, total=10)[0] for step in (0, 3, 4, 9)}
    assert torch.equal(outs[3], outs[0])  # last early step (3 < 0.4 * 10)
    assert torch.equal(outs[4], outs[9])  # first late step
    assert not torch.equal(outs[3], outs[4])


def test_ratio_zero_in_the_current_phase_is_bit_identical_to_unpatched(sd15_case):
    unet, x, t, c, base = sd15_case
    s = settings_from_dict({**AGENTSD, "agentsd.early.ratio": 0.0})  # late still merges
    with torch.no_grad(), SlothPatch(unet, s, seed=7) as patch:
        patch.set_step(0, 10)
        out = unet(x, t, c)
        assert patch.installed  # the patched forward really ran and chose to leave every call alone
    assert not patch.rewritten and torch.equal(out, base)


def test_unet_is_restored_exactly_after_exit(sd15_case):
    unet, x, t, c, base = sd15_case
    before = snapshot(unet)
    _, patch = run(unet, x, t, c, settings_from_dict(AGENTSD))
    assert patch.rewritten
    assert_same_snapshot(before, snapshot(unet))
    assert torch.equal(run(unet, x, t, c)[0], base)


def test_unet_is_restored_exactly_after_an_exception_mid_forward(sd15_case):
    unet, x, t, c, base = sd15_case
    before = snapshot(unet)

    def boom(module, args):
        raise RuntimeError("boom")

    hook = unet.middle_block.register_forward_pre_hook(boom)  # after the merged input layers ran
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with torch.no_grad(), SlothPatch(unet, settings_from_dict(AGENTSD), seed=1) as patch:
                unet(x, t, c)
        assert patch.rewritten  # the failure really came mid-forward, with AgentSD active
    finally:
        hook.remove()
    assert_same_snapshot(before, snapshot(unet))
    assert torch.equal(run(unet, x, t, c)[0], base)


class _Holder(torch.nn.Module):
    """What tomesd.apply_patch expects: a parent with .model.diffusion_model."""

    def __init__(self, unet):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet


def test_agentsd_is_skipped_with_a_note_on_a_tomesd_patched_unet():
    import tomesd

    unet = sd15_unet(seed=3)
    x, t, c = unet_inputs(unet, 2, 16, 16)
    holder = _Holder(unet)
    # level 1 is left alone by tomesd (max_downsample 1) but would be merged by this AgentSD
    agentsd = settings_from_dict({**AGENTSD, "agentsd.max_downsample": 2})
    tomesd.apply_patch(holder, ratio=0.5, use_rand=False)  # as the WebUI's own token merging does
    try:
        tomesd_only, _ = run(unet, x, t, c)
        out, patch = run(unet, x, t, c, agentsd)
    finally:
        tomesd.remove_patch(holder)
    assert torch.equal(out, tomesd_only) and not patch.rewritten
    assert any("AgentSD skipped" in n and "tomesd" in n for n in patch.notes)
    # tomesd's remove_patch leaves _tome_info behind; that alone must not block AgentSD
    _, patch = run(unet, x, t, c, agentsd)
    assert patch.rewritten and not any("AgentSD skipped" in n for n in patch.notes)


# ---- the plain ToMe path against real tomesd on the real UNet -----------------------------------
def sdp_forward(self, x, context=None, mask=None):
    """CrossAttention with torch SDPA, laid out as A1111's `sdp` optimisation
    (modules/sd_hijack_optimizations.py, scaled_dot_product_attention_forward), for both runs."""
    h = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, _, inner = q.shape
    q, k, v = (t.view(b, -1, h, inner // h).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, -1, inner))


PLAIN_TOME = {**AGENTSD, "agentsd.switch_at": 0.0, "agentsd.use_rand": False, "agentsd.max_downsample": 1,
              "agentsd.late.sx": 2, "agentsd.late.sy": 2, "agentsd.late.ratio": 0.4, "agentsd.late.agent_ratio": 0.5}


@pytest.mark.parametrize("batch, h, w", [(2, 32, 32), (1, 24, 40)])
def test_plain_tome_path_equals_real_tomesd_on_the_real_unet(monkeypatch, batch, h, w):
    """AgentSD's late settings (2x2 cells, ratio 0.4, agent_ratio 0.5: agents never pay off) are plain
    ToMe; with use_rand off they must give what tomesd 0.1.3 gives on the same ldm UNet, to the bit:
    the same metric (the block input), the same merge of norm1(x), to_out before the unmerge."""
    import tomesd

    unet = sd15_unet(seed=5)
    x, t, c = unet_inputs(unet, batch, h, w)
    s = settings_from_dict(PLAIN_TOME)
    assert layer_plan(s.agentsd, call(h=h, w=w, batch=batch, step=0)).agent_r == 0  # plain ToMe
    monkeypatch.setattr(CrossAttention, "forward", sdp_forward)  # one attention kernel for both
    plain, _ = run(unet, x, t, c)
    holder = _Holder(unet)
    tomesd.apply_patch(holder, ratio=0.4, max_downsample=1, sx=2, sy=2, use_rand=False)
    try:
        theirs, _ = run(unet, x, t, c)
    finally:
        tomesd.remove_patch(holder)
    ours, patch = run(unet, x, t, c, s)
    assert patch.rewritten
    assert not torch.equal(theirs, plain)  # merging changes the output, so equality means something
    assert torch.equal(ours, theirs)


def test_norm1_as_the_metric_would_merge_other_tokens():
    """Why the block input matters: on the same UNet, matching on norm1(x) (the fallback) merges a
    different set of tokens, so the equality with tomesd above depends on the metric."""
    unet = sd15_unet(seed=5)
    x, t, c = unet_inputs(unet, 2, 32, 32)
    block = unet.input_blocks[1][1].transformer_blocks[0]  # level 0
    seen = []
    grab = block.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        run(unet, x, t, c)
    finally:
        grab.remove()
    plan = layer_plan(settings_from_dict(PLAIN_TOME).agentsd, call(h=32, w=32, batch=2, step=0))
    with torch.no_grad():
        n1 = block.norm1(seen[0])
    merged = [set(match(m, 32, 32, 2, 2).order[0, :plan.r].tolist()) for m in (seen[0], n1)]
    assert merged[0] != merged[1]
    with torch.no_grad():
        fallback, by_input = (agentsd_attention(block.attn1, n1, plan=plan, k_scale2=0.3, k_shortcut=0.0,
                                                upcast=False, metric=m, project=True) for m in (None, seen[0]))
    assert not torch.equal(fallback, by_input)
