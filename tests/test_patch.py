"""The patching context on the real ldm UNet: neutrality, effect, restoration, chaining."""
import pytest
import torch
from ldm.modules.attention import CrossAttention, SpatialTransformer

from lib_sloth import SlothPatch, preset, settings_from_dict
from lib_sloth.settings import SlothSettings
from noise import assert_within_noise, max_abs, noise_floor
from unets import unet_inputs

METHODS = {
    "slothful": {"slothful.enabled": True},
    "tile": {"tile.enabled": True, "tile.tile_size": 16},
    "nearsighted": {"nearsighted.enabled": True, "nearsighted.base_tile_size": 16,
                    "nearsighted.peak_tile_size": 16},
}


def run(unet, x, t, c, settings=None, step=4, total=10, seed=0):
    with torch.no_grad():
        if settings is None:
            return unet(x, t, c)
        with SlothPatch(unet, settings, seed=seed) as patch:
            patch.set_step(step, total)
            return unet(x, t, c)


@pytest.fixture(scope="module")
def sd15_case(sd15):
    x, t, c = unet_inputs(sd15, 2, 40, 40)
    return sd15, x, t, c, run(sd15, x, t, c)


def test_neutral_settings_are_bit_identical_and_install_nothing(sd15_case):
    unet, x, t, c, base = sd15_case
    forward = CrossAttention.forward
    with SlothPatch(unet, SlothSettings()) as patch:
        assert CrossAttention.forward is forward and not patch.installed
        out = unet(x, t, c)
    assert torch.equal(out, base)


def test_enabled_but_too_weak_settings_are_bit_identical(sd15_case):
    unet, x, t, c, base = sd15_case
    s = settings_from_dict({"slothful.enabled": True, "slothful.input.slothful": 1.0,
                            "slothful.output.slothful": 0.5})
    assert torch.equal(run(unet, x, t, c, s), base)


def test_far_from_peak_with_strong_decay_leaves_output_unchanged(sd15_case):
    unet, x, t, c, base = sd15_case
    s = settings_from_dict({"slothful.enabled": True, "slothful.peak_time": 0.0, "slothful.time_decay": 4.0})
    assert torch.equal(run(unet, x, t, c, s, step=9, total=10), base)
    assert not torch.equal(run(unet, x, t, c, s, step=0, total=10), base)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_each_method_changes_output_and_stays_finite(method, layout, request):
    unet = request.getfixturevalue(layout)
    x, t, c = unet_inputs(unet, 2, 64, 40)
    base = run(unet, x, t, c)
    out = run(unet, x, t, c, settings_from_dict(METHODS[method]))
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, base, atol=1e-4)


@pytest.mark.parametrize("batch, h, w", [(1, 24, 72), (3, 72, 24), (4, 32, 32)])
def test_batches_and_aspect_ratios(sd15, batch, h, w):
    x, t, c = unet_inputs(sd15, batch, h, w)
    for data in METHODS.values():
        out = run(sd15, x, t, c, settings_from_dict(data))
        assert out.shape == (batch, 4, h, w) and torch.isfinite(out).all()


def test_rows_of_a_batch_are_independent(sd15):
    # each image is rewritten on its own: row 0 of a batch of 3 equals the same image alone
    x, t, c = unet_inputs(sd15, 3, 32, 48)
    s = settings_from_dict(METHODS["nearsighted"])
    alone = run(sd15, x[:1], t[:1], c[:1], s)
    together = run(sd15, x, t, c, s)
    # noise floor: batch 3 vs batch 1 unpatched. The rewrite's own GEMMs (tiles, pooled K/V) also have
    # batch-dependent shapes, in about as many layers as it replaces: factor 4
    floor = noise_floor((run(sd15, x[:1], t[:1], c[:1])[0], run(sd15, x, t, c)[0]))
    tol = assert_within_noise(alone[0], together[0], floor, 4.0)
    assert max_abs(together[0], run(sd15, x, t, c)[0]) > 100 * tol  # the method's effect is far above it


def test_levels_are_counted_from_the_shallowest_attention_level(sd15, sdxl):
    def levels(unet, h, w):
        x, t, c = unet_inputs(unet, 1, h, w)
        seen = {}
        s = settings_from_dict({"tile.enabled": True})
        def spy(module, info, x, call):
            seen.setdefault(info.name, call.level)

        with SlothPatch(unet, s) as patch:
            patch.interceptors.append(spy)
            with torch.no_grad():
                unet(x, t, c)
        return seen

    sd = levels(sd15, 32, 32)
    assert sd["input_blocks.1.1.transformer_blocks.0.attn1"] == 0
    assert sd["input_blocks.3.1.transformer_blocks.0.attn1"] == 1
    assert sd["input_blocks.5.1.transformer_blocks.0.attn1"] == 2
    assert sd["middle_block.1.transformer_blocks.0.attn1"] == 3
    xl = levels(sdxl, 32, 32)
    assert min(xl.values()) == 0 and xl["input_blocks.4.1.transformer_blocks.0.attn1"] == 0


def test_keep_middle_leaves_the_middle_block_alone(sd15):
    x, t, c = unet_inputs(sd15, 1, 32, 32)
    for keep in (True, False):
        s = settings_from_dict({"slothful.enabled": True, "slothful.keep_middle": keep,
                                "slothful.input.depth_decay": 0.0})
        with SlothPatch(sd15, s) as patch, torch.no_grad():
            sd15(x, t, c)
        assert ("middle_block.1.transformer_blocks.0.attn1" in patch.rewritten) == (not keep)


def test_input_settings_apply_to_input_blocks_and_output_to_output(sd15):
    x, t, c = unet_inputs(sd15, 1, 32, 32)
    s = settings_from_dict({"slothful.enabled": True, "slothful.input.slothful": 0.0,
                            "slothful.output.slothful": 8.0})
    with SlothPatch(sd15, s) as patch, torch.no_grad():
        patch.set_step(4, 10)
        sd15(x, t, c)
    assert patch.rewritten and all(name.startswith("output_blocks") for name in patch.rewritten)


def test_odd_grid_65x97_through_real_spatial_transformer():
    torch.manual_seed(0)

    class OneLevel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.input_blocks = torch.nn.ModuleList([SpatialTransformer(64, 4, 16, context_dim=32)])
            for p in self.parameters():
                torch.nn.init.normal_(p, std=0.2)

        def forward(self, x, context):
            return self.input_blocks[0](x, context)

    net = OneLevel().eval()
    x = torch.randn(2, 64, 65, 97)
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        base = net(x, ctx)
        for data in ({"slothful.enabled": True, "slothful.input.mode": "2D_MAX", "slothful.input.k_blend": 0.5},
                     {"tile.enabled": True, "tile.tile_size": 24},
                     {"nearsighted.enabled": True}):
            with SlothPatch(net, settings_from_dict(data), seed=5) as patch:
                out = net(x, ctx)
            assert patch.rewritten and torch.isfinite(out).all() and not torch.allclose(out, base)


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_original_forward_is_back_after_error_inside_patched_forward(sd15, error):
    x, t, c = unet_inputs(sd15, 1, 32, 32)
    original = CrossAttention.forward
    hooks = dict(sd15._forward_pre_hooks)
    calls = []

    def explode(module, info, x, call):
        calls.append(info.name)
        raise error()

    with pytest.raises(error):
        with SlothPatch(sd15, preset("slothful")) as patch:
            patch.interceptors.append(explode)
            sd15(x, t, c)
    assert calls and CrossAttention.forward is original
    assert dict(sd15._forward_pre_hooks) == hooks
    assert not any("forward" in m.__dict__ for m in sd15.modules())


def test_entering_twice_and_nesting_are_safe(sd15_case):
    unet, x, t, c, base = sd15_case
    original = CrossAttention.forward
    outer = SlothPatch(unet, preset("slothful"))
    with outer:
        with outer:
            once = unet(x, t, c)
        assert CrossAttention.forward is not original  # still inside the outer block
        with SlothPatch(unet, preset("off")):
            again = unet(x, t, c)
    assert CrossAttention.forward is original
    assert torch.equal(once, again)
    assert torch.equal(unet(x, t, c), base)


def test_chains_to_the_forward_installed_at_entry(sd15_case):
    unet, x, t, c, base = sd15_case
    original = CrossAttention.forward
    seen = []

    def optimised(self, x, context=None, mask=None, **kwargs):  # like the WebUI's sdp forward
        seen.append(context is None)
        return original(self, x, context=context, mask=mask)

    CrossAttention.forward = optimised
    try:
        with SlothPatch(unet, preset("slothful")) as patch:
            patch.set_step(0, 1)
            unet(x, t, c)
        assert CrossAttention.forward is optimised
        assert False in seen  # cross-attention went through the optimised forward
    finally:
        CrossAttention.forward = original


def test_instance_level_forward_is_chained_and_restored(sd15_case):
    unet, x, t, c, base = sd15_case
    layer = unet.input_blocks[1][1].transformer_blocks[0].attn1
    bound = layer.forward
    calls = []

    def hypertile_like(x, *args, **kwargs):  # HyperTile keeps the bound method it captured
        calls.append(x.shape[1])
        return bound(x, *args, **kwargs)

    layer.forward = hypertile_like
    try:
        weak = settings_from_dict({"slothful.enabled": True, "slothful.peak_time": 1.0, "slothful.time_decay": 4})
        with SlothPatch(unet, weak) as patch:
            patch.set_step(0, 10)  # far from the peak: sloth is inactive, HyperTile must still run
            unet(x, t, c)
        assert calls and any("HyperTile" in n for n in patch.notes)
        calls.clear()
        with SlothPatch(unet, preset("slothful")) as patch:
            patch.set_step(4, 10)
            unet(x, t, c)
        assert not calls and patch.rewritten["input_blocks.1.1.transformer_blocks.0.attn1"] == 1
        assert layer.__dict__["forward"] is hypertile_like
    finally:
        del layer.forward


def test_sgm_keywords_and_masks_are_accepted(sd15):
    layer = sd15.input_blocks[1][1].transformer_blocks[0].attn1
    x = torch.randn(1, 16 * 16, layer.to_q.in_features)
    with SlothPatch(sd15, preset("slothful")) as patch:
        patch.latent_hw = (16, 16)
        out = layer(x, additional_tokens=None, n_times_crossframe_attn_in_self=0)
        assert patch.rewritten  # sgm's extra keywords at their neutral values: still ours
        patch.rewritten.clear()
        mask = torch.ones(1, 16 * 16, dtype=torch.bool)
        masked = layer(x, mask=mask)
        assert not patch.rewritten  # a masked call goes to the original forward
    assert out.shape == masked.shape == x.shape


def test_upcast_keeps_input_dtype(sd15):
    unet = sd15
    x, t, c = unet_inputs(unet, 1, 32, 32)
    s = settings_from_dict({"nearsighted.enabled": True, "upcast_attention": True})
    out = run(unet, x, t, c, s)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_same_seed_same_result_other_seed_other_seams(sd15):
    x, t, c = unet_inputs(sd15, 1, 40, 40)
    s = settings_from_dict({"tile.enabled": True, "tile.tile_size": 16})  # 3 tiles of 14: 2 padding cells
    a = run(sd15, x, t, c, s, seed=1)
    assert torch.equal(a, run(sd15, x, t, c, s, seed=1))
    others = [run(sd15, x, t, c, s, seed=seed) for seed in (2, 3, 4)]
    assert any(not torch.equal(a, o) for o in others)


def test_a_call_whose_tokens_match_no_grid_reaches_interceptors_with_grid_none_and_no_planner(sd15):
    layer = sd15.input_blocks[1][1].transformer_blocks[0].attn1
    seen = []
    with SlothPatch(sd15, preset("slothful")) as patch:
        patch.interceptors.append(lambda module, info, x, call: seen.append(call) or None)
        patch.latent_hw = (16, 16)
        layer(torch.randn(1, 15 * 15, layer.to_q.in_features))  # merged upstream: 225 tokens fit no level
        layer(torch.randn(1, 16 * 16, layer.to_q.in_features))
    unknown, known = seen
    assert unknown.grid is None and (known.grid.h, known.grid.w, known.grid.level) == (16, 16, 0)
    with pytest.raises(ValueError, match="unknown"):
        unknown.h
    assert patch.rewritten == {"input_blocks.1.1.transformer_blocks.0.attn1": 1}  # only the known-grid call
    assert any("225 tokens match no grid" in n for n in patch.notes)


def test_an_exception_inside_the_block_restores_class_and_instance_forwards_and_the_hook(sd15_case):
    unet, x, t, c, base = sd15_case
    layer = unet.input_blocks[1][1].transformer_blocks[0].attn1
    own = layer.forward
    layer.forward = own  # an instance forward (HyperTile-style)
    try:
        with pytest.raises(KeyboardInterrupt):
            with SlothPatch(unet, preset("slothful")) as patch:
                assert patch.installed and layer.__dict__["forward"] is not own
                raise KeyboardInterrupt
        assert not patch.installed and layer.__dict__["forward"] is own
        assert not hasattr(CrossAttention.__dict__.get("forward"), "__sloth_original__")
        assert not unet._forward_pre_hooks
        assert torch.equal(unet(x, t, c), base)
    finally:
        del layer.forward
