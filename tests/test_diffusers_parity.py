"""ldm vs diffusers: the same weights (converted by diffusers' own converter) give the same output,
plain and with every method, within the noise floor of the two plain UNets' own difference."""
import types

import pytest
import torch

pytest.importorskip("diffusers")

import diffusers_unets as du  # noqa: E402
import unets  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint  # noqa: E402

from lib_sloth import NoiseSpace, SlothPatch, settings_from_dict  # noqa: E402
from lib_sloth.guidance import GuidedStep  # noqa: E402
from lib_sloth.diffusers import apply  # noqa: E402
from lib_sloth.diffusers.layers import layer_index  # noqa: E402
from lib_sloth.layers import LayerIndex  # noqa: E402
from noise import SAG_FACTOR, assert_within_noise, max_abs  # noqa: E402

METHODS = {name: data for name, data in du.METHODS.items() if name != "sag"}  # SAG: its own test below
SAG = du.METHODS["sag"]
STEP, TOTAL = 4, 10  # near the methods' peak (peak_time 0.4)
# A rewrite is the same engine code on both sides, fed inputs that already differ by the plain
# UNets' rounding; tiling, pooling and merging move that difference around without growing it
# much, and the rest of the UNet adds its own rounding once more. 4 x the floor leaves a margin.
FACTOR = 4.0


def converted(ldm, config) -> UNet2DConditionModel:
    """The diffusers UNet with the ldm UNet's weights, through diffusers' single-file converter."""
    state = convert_ldm_unet_checkpoint({LDM_UNET_KEY + k: v for k, v in ldm.state_dict().items()}, config)
    model = UNet2DConditionModel(**config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    return model


@pytest.fixture(scope="module", params=["sd15", "sdxl-like"])
def twins(request):
    if request.param == "sd15":
        ldm = unets.sd15_unet(seed=0, context_dim=du.CONTEXT)
        diff = converted(ldm, du.sd15_config())
    else:
        ldm = unets.sdxl_like_unet(seed=0, context_dim=du.CONTEXT)
        diff = converted(ldm, du.sdxl_like_config(added_time=False, depth=1))
    x, t, c = unets.unet_inputs(ldm, 2, 40, 40, tokens=8)
    with torch.no_grad():
        plain_ldm, plain_diff = ldm(x, t, c), diff(x, t, encoder_hidden_states=c).sample
    return request.param, ldm, diff, (x, t, c), plain_ldm, plain_diff


def ldm_run(ldm, inputs, settings, seed=1):
    with torch.no_grad(), SlothPatch(ldm, settings, seed=seed) as patch:
        patch.set_step(STEP, TOTAL)
        return ldm(*inputs)


def diffusers_run(diff, inputs, settings, seed=1):
    x, t, c = inputs
    with torch.no_grad(), apply(diff, settings, seed=seed) as run:
        run.set_step(STEP, TOTAL)
        return diff(x, t, encoder_hidden_states=c).sample


def test_the_layer_index_matches_the_ldm_twins_layer_for_layer(twins):
    _, ldm, diff, *_ = twins
    ours, theirs = layer_index(diff), LayerIndex(ldm)
    by_place = {(i.block, i.index): m for m, i in theirs.layers.items()}
    assert len(ours) == len(theirs) and ours._base_log2 == theirs._base_log2
    for module, info in ours.layers.items():
        twin = by_place[(info.block, info.index)]
        assert torch.equal(module.to_q.weight, twin.to_q.weight), info.name


def test_the_plain_twins_agree(twins):
    name, _, _, _, plain_ldm, plain_diff = twins
    # the floor the method comparisons use: fp32 rounding of two implementations, nothing more
    assert max_abs(plain_ldm, plain_diff) < 1e-4 * float(plain_ldm.abs().max()), name


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_agrees_between_ldm_and_diffusers(twins, method):
    name, ldm, diff, inputs, plain_ldm, plain_diff = twins
    settings = settings_from_dict(METHODS[method])
    got, want = diffusers_run(diff, inputs, settings), ldm_run(ldm, inputs, settings)
    tol = assert_within_noise(got, want, max_abs(plain_ldm, plain_diff), FACTOR, f"{name} {method}")
    assert max_abs(want, plain_ldm) > 100 * tol, f"{name} {method}: the method must change the output"


def test_sag_agrees_between_ldm_and_diffusers(twins):
    """SAG's term for the uncond row of a [uncond, cond] call: the ldm side driving the patch's SAG
    guidance directly, the diffusers side through the adapter's UNet hooks on a pipeline stand-in."""
    name, ldm, diff, (x, t, c), plain_ldm, plain_diff = twins
    settings = settings_from_dict(SAG)
    scheduler = du.ddim()
    scheduler.set_timesteps(TOTAL)
    t_now = scheduler.timesteps[STEP]
    ts = torch.full((2,), int(t_now), dtype=torch.long)
    with torch.no_grad():
        base_ldm, base_diff = ldm(x, ts, c), diff(x, t_now, encoder_hidden_states=c).sample
        patch = SlothPatch(ldm, settings, seed=1)
        sag = patch.guidance("sag")
        with patch:
            sag.arm([0])
            out = ldm(x, ts, c)
            sag.stop_recording()
            uncond = out[:1]
            rows = {"uncond": slice(0, 1), "cond": slice(1, 2)}
            step = GuidedStep(x[:1], uncond, out[1:], lambda which, x_in: ldm(x_in, ts[:1], c[rows[which]]),
                              NoiseSpace.from_alphas_cumprod(scheduler.alphas_cumprod, ts[:1], like=x), "eps")
            guided = sag.guide(uncond, step)
        want = guided - uncond
        pipe = types.SimpleNamespace(unet=diff, scheduler=scheduler, do_classifier_free_guidance=True)
        with apply(pipe, settings, seed=1):
            got = diff(x, t_now, encoder_hidden_states=c).sample - base_diff
    # one extra UNet call and SAG's arithmetic on top of the plain difference (tests/noise.py); the
    # same term lands on the uncond and the cond row (the pipeline's CFG then gives cfg + term)
    floor = max_abs(base_ldm, base_diff)
    tol = assert_within_noise(got[:1], want, floor, SAG_FACTOR * FACTOR, f"{name} sag, uncond row")
    assert_within_noise(got[1:], want, floor, SAG_FACTOR * FACTOR, f"{name} sag, cond row")
    assert float(want.abs().max()) > 100 * tol, f"{name}: SAG must change the output"
