"""What PAG and SEG share: the settings block (scale, layers, step window), which layers a setting
picks on SD1.x and SDXL layouts, row routing for the batched pass, and the guidance term."""
import pytest
import torch

from lib_sloth.fields import SettingsError
from lib_sloth.pag import PagSettings
from lib_sloth.perturbed import LayerChoice, attention_depths, perturbed_guidance, rows_routed
from lib_sloth.schedule import in_window


# ---- the step window ---------------------------------------------------------------------------
def test_window_is_progress_with_both_ends_included():
    assert [s for s in range(11) if in_window(s, 11, 0.0, 0.5)] == [0, 1, 2, 3, 4, 5]
    assert [s for s in range(11) if in_window(s, 11, 0.5, 1.0)] == [5, 6, 7, 8, 9, 10]
    assert [s for s in range(5) if in_window(s, 5, 0.0, 1.0)] == [0, 1, 2, 3, 4]
    assert in_window(0, 1, 0.0, 0.0)  # a one-step pass is at progress 0


def test_start_after_end_is_an_empty_window_and_inactive():
    s = PagSettings(enabled=True, start=0.6, end=0.4)
    assert not any(in_window(i, 10, s.start, s.end) for i in range(10))
    assert not s.active and not s.guides(5, 10)


def test_guides_only_inside_the_window():
    s = PagSettings(enabled=True, start=0.25, end=0.75)
    assert [i for i in range(9) if s.guides(i, 9)] == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("kwargs", [dict(scale=0.0), dict(enabled=False), dict(middle=False)])
def test_neutral_settings_are_inactive(kwargs):
    assert not PagSettings(**{"enabled": True, **kwargs}).active


def test_defaults_are_comfyuis_node():
    s = PagSettings()
    assert (s.scale, s.middle, s.input_levels, s.output_levels, s.start, s.end) == (3.0, True, 0, 0, 0.0, 1.0)


@pytest.mark.parametrize("field, value", [("start", 1.5), ("end", -0.1), ("input_levels", 4), ("scale", 31.0)])
def test_out_of_range_values_are_refused_naming_field_and_value(field, value):
    with pytest.raises(SettingsError, match=f"{field}={value}"):
        PagSettings(**{field: value})


# ---- which layers ------------------------------------------------------------------------------
def chosen(unet, **kwargs):
    names = {m: n for n, m in unet.named_modules()}
    return sorted(names[m].rsplit(".transformer_blocks", 1)[0] for m in LayerChoice(unet, PagSettings(**kwargs)))


# the tiny SD1.5 layout has one res block per level (the real one two): input blocks 1 / 3 / 5 carry
# attention at depths 0 / 1 / 2, output blocks 2-3 / 4-5 / 6-7 at depths 2 / 1 / 0
def test_depths_follow_the_downsamples_of_an_sd15_layout(sd15):
    names = {m: n for n, m in sd15.named_modules()}
    depths = {names[m].split(".transformer_blocks")[0]: d for m, d in attention_depths(sd15).items()}
    assert depths["input_blocks.1.1"] == ("input", 0) and depths["input_blocks.5.1"] == ("input", 2)
    assert depths["middle_block.1"] == ("middle", 3)
    assert depths["output_blocks.3.1"] == ("output", 2) and depths["output_blocks.7.1"] == ("output", 0)


def test_default_is_the_middle_block_alone(sd15, sdxl):
    assert chosen(sd15) == ["middle_block.1"]
    assert chosen(sdxl) == ["middle_block.1"]


def test_levels_count_from_the_deepest_level_on_sd15(sd15):
    assert chosen(sd15, middle=False, input_levels=1) == ["input_blocks.5.1"]
    assert chosen(sd15, middle=False, output_levels=1) == ["output_blocks.2.1", "output_blocks.3.1"]
    assert len(chosen(sd15, middle=False, input_levels=3)) == 3  # every input level with attention
    assert chosen(sd15, middle=True, input_levels=1, output_levels=1) == [
        "input_blocks.5.1", "middle_block.1", "output_blocks.2.1", "output_blocks.3.1"]


def test_levels_count_from_the_deepest_level_on_sdxl(sdxl):
    assert chosen(sdxl, middle=False, input_levels=1) == ["input_blocks.7.1", "input_blocks.8.1"]
    assert chosen(sdxl, middle=False, output_levels=1) == ["output_blocks.0.1", "output_blocks.1.1",
                                                            "output_blocks.2.1"]
    assert chosen(sdxl, middle=False, input_levels=2) == ["input_blocks.4.1", "input_blocks.5.1",
                                                           "input_blocks.7.1", "input_blocks.8.1"]


# ---- row routing -------------------------------------------------------------------------------
def test_rows_routed_runs_each_side_on_exactly_its_rows():
    x = torch.arange(6.0).reshape(6, 1, 1)
    seen = {}

    def side(name, factor):
        def fn(idx):
            seen[name] = idx
            return x[idx] * factor
        return fn

    out = rows_routed(6, [([3, 1], side("p", 100)), ([5], side("s", -1))], side("n", 1))
    assert seen == {"p": [1, 3], "s": [5], "n": [0, 2, 4]}
    assert out.flatten().tolist() == [0.0, 100.0, 2.0, 300.0, 4.0, -5.0]


def test_rows_routed_with_all_or_no_rows_calls_one_side_only():
    x = torch.ones(2, 1, 1)

    def boom(idx):
        raise AssertionError("called")

    assert torch.equal(rows_routed(2, [([0, 1], lambda idx: x[idx] * 2)], boom), x * 2)
    assert torch.equal(rows_routed(2, [([], boom)], lambda idx: x[idx] * 3), x * 3)


# ---- the guidance term -------------------------------------------------------------------------
def test_guidance_adds_scale_times_cond_minus_perturbed():
    cfg, cond, pert = torch.randn(3, 2, 4, 4, 4).unbind(0)
    assert torch.equal(perturbed_guidance(cfg, cond, pert, 2.5), cfg + 2.5 * (cond - pert))
    assert perturbed_guidance(cfg, cond, pert, 0.0) is cfg
