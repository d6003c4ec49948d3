"""The Sloth processor computes diffusers' AttnProcessor2_0 steps around the engine's attention."""
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from dataclasses import dataclass  # noqa: E402

from lib_sloth import SlothPatch, settings_from_dict  # noqa: E402
from lib_sloth.attention import attend  # noqa: E402
from lib_sloth.diffusers import processor  # noqa: E402
from lib_sloth.diffusers._engine import LayerView  # noqa: E402
from lib_sloth.layer_call import Plan  # noqa: E402
from lib_sloth.layers import LayerIndex, LayerInfo  # noqa: E402
from noise import EPS32, max_abs  # noqa: E402


@dataclass(frozen=True)
class PlainAttention(Plan):
    """A rewrite that is no rewrite: full softmax attention through the engine's kernel."""

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(attend(layer.to_q(x), layer.to_k(k_in), layer.to_v(v_in), layer.heads, upcast))

    def keys_per_query(self, h, w):
        return float(h * w)


@pytest.mark.parametrize("extras", [
    {},
    {"norm_num_groups": 8, "residual_connection": True, "rescale_output_factor": 2.0},
    {"spatial_norm_dim": 4, "residual_connection": True},
], ids=["plain", "group-norm-residual-rescale", "spatial-norm"])
def test_a_rewrite_that_changes_nothing_gives_attnprocessor2_0s_output(extras):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8, bias=True, **extras).eval()
    view, info = LayerView(attn), LayerInfo("probe.attn1", "input", 0)
    patch = SlothPatch(attn, settings_from_dict({"slothful.enabled": True}), 0,
                       layers=LayerIndex.from_table({view: info}, [], 1), forwards=False)
    patch.latent_hw = (8, 8)  # as inside a UNet call on an 8 x 8 latent
    patch.interceptors.append(lambda module, info, x, call: PlainAttention())  # the engine's first say
    wrapper = processor.SlothProcessor(AttnProcessor2_0(), view, patch, rewrite=True)
    g = torch.Generator().manual_seed(1)
    temb = torch.randn(2, 4, 4, 4, generator=g) if "spatial_norm_dim" in extras else None
    for x in (torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 64, 32, generator=g)):  # 4-D and 3-D inputs
        if temb is not None and x.ndim == 3:
            continue  # a spatial norm needs the 4-D feature map
        with torch.no_grad():
            got, want = wrapper(attn, x, temb=temb), AttnProcessor2_0()(attn, x, temb=temb)
        rewritten, patch.rewritten[info.name] = patch.rewritten[info.name], 0
        assert got.shape == want.shape and rewritten == 1  # the rewrite path ran
        # same kernel, same order of operations: at most a rounding apart
        assert max_abs(got, want) <= 4 * EPS32 * float(want.abs().max()), extras


def test_layers_with_qk_norms_or_a_foreign_scale_are_never_rewritten():
    torch.manual_seed(0)
    assert processor.rewritable(Attention(query_dim=32, heads=4, dim_head=8), AttnProcessor2_0()) is None
    assert "normalises q and k" in processor.rewritable(
        Attention(query_dim=32, heads=4, dim_head=8, qk_norm="layer_norm"), AttnProcessor2_0())
    assert "scale" in processor.rewritable(
        Attention(query_dim=32, heads=4, dim_head=8, scale_qk=False), AttnProcessor2_0())
    assert "not plain attention" in processor.rewritable(Attention(query_dim=32, heads=4, dim_head=8), object())


def test_a_module_processor_is_registered_again_after_the_block():
    """A processor that is an nn.Module (IP-Adapter's carry weights) leaves the layer's modules
    while wrapped, and is a registered submodule again afterwards."""
    import diffusers_unets as du

    from lib_sloth.diffusers import apply

    class WeightedProcessor(torch.nn.Module, AttnProcessor2_0):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.gain = torch.nn.Parameter(torch.ones(()))

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
            return AttnProcessor2_0.__call__(self, attn, hidden_states, encoder_hidden_states, attention_mask) * self.gain

    unet = du.unet(du.sd15_config())
    attn = unet.mid_block.attentions[0].transformer_blocks[0].attn1
    mine = WeightedProcessor()
    attn.set_processor(mine)
    keys = set(unet.state_dict())
    with apply(unet, "slothful"):
        assert attn.processor is not mine
    assert attn.processor is mine and set(unet.state_dict()) == keys
    assert "processor" in attn._modules
