"""PAG and SEG through the Forge / reForge adapter on the real ldm_patched code path (tests/forge_harness.py,
the stand-ins of tests/test_forge_backend.py): batched into the CFG call, alone at CFG 1, with SAG in
their own calls, Forge's built-in PAG standing ours down on the middle block, the info-text round trip."""
import pytest
import torch

from lib_sloth import infotext
from lib_sloth.settings import settings_from_dict
from test_forge_backend import STEPS, baseline, forward_is_original, make_p, patchers, run_pass, the_pass  # noqa: F401

PAG = {"pag.enabled": True}
SEG = {"seg.enabled": True, "seg.blur_sigma": 2.0}
SAG = {"sag.enabled": True, "sag.scale": 1.0}


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
@pytest.mark.parametrize("data", [PAG, SEG, {**PAG, **SEG}])
def test_batched_guidance_rides_in_the_cfg_call_and_changes_the_output(patchers, baseline, layout, data):
    p = make_p(layout, patchers[layout])
    out, _ = run_pass(p, settings_from_dict(data))
    sloth_pass = the_pass(p)
    assert torch.isfinite(out).all() and (out - baseline(layout)).abs().max() > 1e-3
    assert sloth_pass.unet_calls == STEPS and sum(sloth_pass.patch.extra_calls.values()) == 0
    assert all(g.batched_calls == STEPS for g in sloth_pass.guidances) and forward_is_original()


def test_with_sag_each_guidance_makes_its_own_call(patchers, baseline):
    p = make_p("sd15", patchers["sd15"])
    out, _ = run_pass(p, settings_from_dict({**SAG, **PAG}))
    sloth_pass = the_pass(p)
    assert sloth_pass.patch.extra_calls == {"sag": STEPS, "pag": STEPS}
    sag_only, _ = run_pass(p, settings_from_dict(SAG))
    assert torch.isfinite(out).all() and (out - sag_only).abs().max() > 1e-3


def test_at_cfg_one_pag_still_guides_against_the_cond(patchers, baseline):
    p = make_p("sd15", patchers["sd15"], cfg_scale=1.0)
    out, notes = run_pass(p, settings_from_dict(PAG), cfg=1.0)
    assert (out - baseline("sd15", cfg=1.0)).abs().max() > 1e-3
    assert the_pass(p).guidances[0].batched_calls == STEPS and not any("PAG skipped" in n for n in notes)


def test_neutral_and_empty_window_are_bit_identical(patchers, baseline):
    p = make_p("sd15", patchers["sd15"])
    for data in ({"pag.enabled": True, "pag.scale": 0.0}, {"seg.enabled": True, "seg.start": 0.8, "seg.end": 0.2}):
        out, _ = run_pass(p, settings_from_dict(data))
        assert torch.equal(out, baseline("sd15")) and the_pass(p).unet_calls == STEPS


def test_forge_builtin_pag_stands_ours_down_on_the_middle_block(patchers, baseline):
    p = make_p("sd15", patchers["sd15"], params={"pagi_enabled": True})
    out, notes = run_pass(p, settings_from_dict(PAG))
    assert any("built-in PerturbedAttentionGuidance is enabled too" in n and "off for this pass" in n for n in notes)
    assert torch.equal(out, baseline("sd15"))
    p = make_p("sd15", patchers["sd15"], params={"pagi_enabled": True})
    out, notes = run_pass(p, settings_from_dict({**PAG, "pag.output_levels": 1}))
    assert any("leaves the middle block to it" in n for n in notes) and not torch.equal(out, baseline("sd15"))


def test_info_text_round_trip_reproduces_the_output(patchers):
    p = make_p("sd15", patchers["sd15"])
    settings = settings_from_dict({**PAG, "pag.scale": 2.0, **SEG, "seg.end": 0.5, **SAG})
    out, _ = run_pass(p, settings)
    again, _ = run_pass(p, settings_from_dict(infotext.read(infotext.to_params(settings))))
    assert torch.equal(out, again)
