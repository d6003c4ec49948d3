"""PAG and SEG through the A1111 adapter and the real Script, in the A1111 1.10.1 stand-in: the
perturbed cond rows batched into the CFG call, the separate call where the WebUI splits, SAG on or
timestep samplers, the step window, AND prompts, SDXL, and the info-text round trip."""
import pytest
import torch

from lib_sloth import infotext
from lib_sloth.settings import settings_from_dict
from noise import SAG_FACTOR, assert_within_noise, max_abs, noise_floor
from test_a1111_backend import backend, generate, generate_one_ulp_apart, sdxl, webui  # noqa: F401 (fixtures)

from modules import shared

PAG = {"pag.enabled": True}
SEG = {"seg.enabled": True, "seg.blur_sigma": 2.0}
STEPS = 4


def calls_of(run):
    """(result, rows of every model call it made)."""
    before = len(shared.sd_model.calls)
    out = run()
    return out, [c["rows"] for c in shared.sd_model.calls[before:]]


def the_pass(backend):
    return backend.passes[-1].sloth_pass


@pytest.mark.parametrize("data", [PAG, SEG])
def test_batched_guidance_rides_in_the_cfg_call_and_changes_the_image(backend, data):
    (plain, _), plain_rows = calls_of(lambda: generate(enabled=False, steps=STEPS))
    (out, _), rows = calls_of(lambda: generate(data, steps=STEPS))
    g, = the_pass(backend).guidances
    assert plain_rows == [2] * STEPS and rows == [3] * STEPS  # cond, uncond + the perturbed cond row
    assert g.batched_calls == STEPS and g.extra_calls == 0
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)


@pytest.mark.parametrize("data", [PAG, SEG])
def test_split_calls_make_one_more_call_and_match_the_batched_result(backend, data):
    batched, _ = generate(data, batch_size=2)
    shared.opts.batch_cond_uncond = False
    try:
        (split, _), rows = calls_of(lambda: generate(data, batch_size=2))
        plain_split, _ = generate(enabled=False, batch_size=2)
    finally:
        shared.opts.batch_cond_uncond = True
    g, = the_pass(backend).guidances
    assert rows == [2, 2, 2] * STEPS and g.extra_calls == STEPS  # cond, uncond, then the perturbed cond rows
    plain_batched, _ = generate(enabled=False, batch_size=2)
    # noise floor: split vs batched with the extension off, and how far the guided run carries one
    # rounding per call; the guided step carries three predictions' rounding (tests/noise.py SAG_FACTOR)
    floor = noise_floor((plain_batched, plain_split), (batched, generate_one_ulp_apart(data, batch_size=2)[0]))
    tol = assert_within_noise(split, batched, floor, SAG_FACTOR)
    assert max_abs(batched, plain_batched) > 100 * tol


def test_neutral_guidance_settings_are_bit_identical(backend):
    plain, _ = generate(enabled=False)
    for data in ({"pag.enabled": True, "pag.scale": 0.0}, {"pag.enabled": True, "pag.start": 0.9, "pag.end": 0.1},
                 {"seg.enabled": True, "seg.blur_sigma": 0.0}):
        (out, _), rows = calls_of(lambda: generate(data))
        assert torch.equal(out, plain) and rows == [2] * STEPS, data


def test_the_window_guides_only_its_steps(backend):
    plain, _ = generate(enabled=False, steps=5)
    (out, _), rows = calls_of(lambda: generate({**PAG, "pag.start": 0.5}, steps=5))
    assert rows == [2, 2, 3, 3, 3]  # progress 0, .25 outside; .5, .75, 1 guided
    assert the_pass(backend).guidances[0].batched_calls == 3
    assert not torch.allclose(out, plain, atol=1e-4)


def test_with_sag_every_guidance_adds_its_own_term_in_its_own_calls(backend):
    (out, _), rows = calls_of(lambda: generate({"sag.enabled": True, "sag.scale": 1.0, **PAG, **SEG}))
    sloth_pass = the_pass(backend)
    sag, pag, seg = sloth_pass.guidances
    # the CFG call (SAG records the middle block there), SAG's call, PAG's and SEG's
    assert rows == [2, 1, 1, 1] * STEPS
    assert (sag.extra_calls, pag.extra_calls, seg.extra_calls) == (STEPS, STEPS, STEPS)
    sag_only, _ = generate({"sag.enabled": True, "sag.scale": 1.0})
    assert torch.isfinite(out).all() and not torch.allclose(out, sag_only, atol=1e-4)


def test_pag_and_seg_together_each_perturb_their_own_appended_rows(backend):
    (out, _), rows = calls_of(lambda: generate({**PAG, **SEG}))
    pag, seg = the_pass(backend).guidances
    assert rows == [4] * STEPS and pag.batched_calls == seg.batched_calls == STEPS
    pag_only, _ = generate(PAG)
    assert not torch.allclose(out, pag_only, atol=1e-4)


def test_timestep_sampler_and_and_prompt(backend):
    (plain, _), plain_rows = calls_of(lambda: generate(enabled=False, sampler="DDIM", prompt="a cat AND a dog"))
    (out, _), rows = calls_of(lambda: generate(PAG, sampler="DDIM", prompt="a cat AND a dog"))
    assert set(plain_rows) == {3} and rows == [5] * len(plain_rows)  # + the two cond rows perturbed
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)


def test_seg_on_the_sdxl_layout(backend, sdxl):
    plain, _ = generate(enabled=False)
    (out, _), rows = calls_of(lambda: generate({"seg.enabled": True}))
    assert rows == [3] * STEPS
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)


def test_info_text_round_trip_reproduces_the_image(backend):
    data = {**PAG, "pag.scale": 2.5, "pag.output_levels": 1, **SEG, "seg.end": 0.6}
    out, p = generate(data)
    params = {k: v for k, v in p.extra_generation_params.items() if k.startswith("Sloth")}
    assert params["Sloth PAG"] == "scale=2.5 input_levels=0 middle=1 output_levels=1 start=0 end=1"
    read = infotext.read(params)
    again, _ = generate(read)
    assert torch.equal(out, again)


def test_sags_window_makes_its_extra_call_only_inside(backend):
    (out, _), rows = calls_of(lambda: generate({"sag.enabled": True, "sag.scale": 1.0, "sag.end": 0.5}, steps=5))
    sag, = the_pass(backend).guidances
    assert rows == [2, 1, 2, 1, 2, 1, 2, 2] and sag.extra_calls == 3  # progress 0, .25, .5 guided; .75, 1 not
    plain, _ = generate(enabled=False, steps=5)
    assert not torch.allclose(out, plain, atol=1e-4)


def test_with_agentsd_the_perturbed_rows_get_their_own_call(backend):
    """AgentSD's random merging depends on the batch size: appending rows would change the CFG rows' merge."""
    (out, _), rows = calls_of(lambda: generate({"agentsd.enabled": True, **PAG}))
    assert rows == [2, 1] * STEPS and the_pass(backend).guidances[0].extra_calls == STEPS
    agentsd_only, _ = generate({"agentsd.enabled": True})
    assert torch.isfinite(out).all() and not torch.allclose(out, agentsd_only, atol=1e-4)
