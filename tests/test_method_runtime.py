"""A method owns its run-time needs: the two example methods of tests/method_examples.py (a sixth
per-layer method and a second guidance method), each one module and one table entry, get the K/V
inputs the front end gives (A1111 hypernetworks), a budget chart in "Show Sloth maps", a bench case,
and, for the guidance, its extra UNet pass in the A1111 stand-in (Forge, Forge main: their own
test files). The generic code names no method (tests/test_imports.py checks its imports).
"""
import pytest
import torch
from PIL import Image

from lib_sloth import bench_cases, methods
from lib_sloth.maps import MapRecorder
from lib_sloth.patch import SlothPatch
from lib_sloth.settings import settings_from_dict
from lib_sloth import draw_maps
from method_examples import ECHO, ECHO_ON, VSCALE
from unets import unet_inputs

USED = {"vscale.enabled": True, "vscale.scale": 0.5}


@pytest.fixture
def vscale():
    with methods.registered(VSCALE):
        yield VSCALE


def test_its_plans_get_the_front_ends_k_and_v_inputs(vscale, sd15):
    """The K/V inputs are arguments of Plan.run: a method cannot forget them. A source that changes
    V (as a hypernetwork does) changes the rewritten layers, and only through V."""
    x, t, c = unet_inputs(sd15, 2, 16, 16)
    doubled = lambda h: (h, 2 * h)  # noqa: E731
    with torch.no_grad():
        with SlothPatch(sd15, settings_from_dict(USED)) as patch:
            plain = sd15(x, t, c)
        with SlothPatch(sd15, settings_from_dict(USED), kv_source=doubled) as patch:
            through_source = sd15(x, t, c)
        with SlothPatch(sd15, settings_from_dict({"vscale.enabled": True, "vscale.scale": 1.0}),
                        kv_source=doubled) as neutral:
            untouched = sd15(x, t, c)
        base = sd15(x, t, c)
    assert patch.rewritten and not torch.allclose(through_source, plain, atol=1e-4)
    assert torch.equal(untouched, base) and not neutral.installed  # inactive: the source is never read


def test_its_budget_is_recorded_and_drawn(vscale, sd15):
    settings = settings_from_dict(USED)
    recorder = MapRecorder(settings, seed=1)
    x, t, c = unet_inputs(sd15, 2, 16, 16)
    with torch.no_grad(), SlothPatch(sd15, settings, recorder=recorder) as patch:
        for step in range(3):
            patch.set_step(step, 3)
            sd15(x, t, c)
    assert recorder.budget_series(("input", 0)) == [1.0, 1.0, 1.0]  # full attention: every key
    drawn = draw_maps.render(recorder, Image.new("RGB", (128, 128)), "txt2img")
    (chart,) = [m for m in drawn if "K/V budget" in m.caption]
    assert "V Scale" in chart.caption


def test_its_bench_case_times_the_method_at_its_defaults(vscale, sd15):
    (row,) = [c for c in bench_cases.sloth_cases() if c.name == "vscale"]
    assert dict(row.settings) == {"vscale.enabled": True}
    (case,) = [c for c in bench_cases.default_cases() if c.name == "vscale"]
    x, t, c = unet_inputs(sd15, 2, 16, 16)
    with torch.no_grad():
        base = sd15(x, t, c)
        with case.enter(sd15):
            timed = sd15(x, t, c)
    assert torch.equal(timed, base)  # V Scale's defaults (scale 1) are neutral: nothing installed


def test_a_guidance_method_gets_a_guided_bench_case(sd15):
    with methods.registered(ECHO):
        (case,) = [c for c in bench_cases.sag_cases() if c.name == "cfg step + Echo"]
        x, t, c = unet_inputs(sd15, 2, 16, 16)
        with torch.no_grad(), case.enter(sd15) as run:
            case.run(sd15, x, t, c, run)
        assert run.patch.extra_calls["echo"] == 1


def test_a_guidance_method_makes_its_extra_pass_in_the_a1111_standin():
    """The A1111 adapter arms, calls and combines every guidance the same way: Echo's extra uncond
    pass runs once per step inside the CFG denoiser, and its info text is written and read back."""
    from a1111_jobs import start_webui  # puts the stand-in on sys.path

    import standin
    from modules import scripts

    from lib_sloth import infotext
    from test_a1111_backend import CapturingBackend, generate, make_model

    with methods.registered(ECHO):
        start_webui(make_model("sd1"))
        try:
            backend = CapturingBackend()
            for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
                runner.script("Sloth").backend = backend
            plain, _ = generate({}, False, size=128, steps=3)  # a 2x2 middle grid: identity attention differs
            guided, p = generate(ECHO_ON, size=128, steps=3)
            assert backend.passes[-1].sloth_pass.patch.extra_calls["echo"] == 3
            params = p.extra_generation_params
            assert params["Sloth Echo"] == "scale=1" and infotext.read(params)["echo.scale"] == 1.0
        finally:
            standin.reset()
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain, atol=1e-4)


def test_a_guidance_method_gets_settings_info_text_presets_and_api_names():
    from lib_sloth import infotext
    from lib_sloth.presets import preset
    from lib_sloth.settings import iter_fields
    from lib_sloth.webui import args as script_args
    from lib_sloth.webui import labels

    with methods.registered(ECHO):
        settings = settings_from_dict(ECHO_ON)
        assert [s.path for s in iter_fields() if s.path.startswith("echo.")] == ["echo.enabled", "echo.scale"]
        params = infotext.to_params(settings)
        assert params["Sloth Echo"] == "scale=1"
        assert settings_from_dict(infotext.read(params)) == settings
        assert preset("echo") == settings
        assert "echo.scale" in script_args.arg_names()
        assert labels.xyz_label("echo.scale") == "[Sloth] Echo scale"
    assert "echo.scale" not in script_args.arg_names()
