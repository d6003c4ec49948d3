"""Tests of the A1111 v1.10.1 test stand-in itself (tests/standins/a1111).

They pin the behaviours an always-on extension depends on: the CFG batch layout,
the order of UNet calls and callbacks, step counting, script-argument plumbing,
infotext writing/parsing/pasting, XYZ cells and the sampler loops.
"""
import os
import sys
import textwrap

import pytest

STANDIN_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins", "a1111")
if STANDIN_ROOT not in sys.path:
    sys.path.insert(0, STANDIN_ROOT)

import torch  # noqa: E402

import gradio as gr  # noqa: E402

import standin  # noqa: E402
import standin_sd_model  # noqa: E402
from modules import (  # noqa: E402
    errors, infotext_utils, patches, processing, prompt_parser, script_callbacks, scripts, sd_samplers,
    sd_samplers_common, shared,
)
from modules.api import api as api_module  # noqa: E402
from modules.ui_components import InputAccordion  # noqa: E402


@pytest.fixture(autouse=True)
def fresh():
    standin.reset()
    torch.manual_seed(0)
    yield
    standin.reset()


def echo_model(kind="sd1", tokens=4):
    return standin.use_model(standin_sd_model.make_model(kind, tokens=tokens, context_dim=8, adm_dim=4, echo=True))


def bare_p(**kwargs):
    kwargs.setdefault("width", 32)
    kwargs.setdefault("height", 32)
    p = processing.StableDiffusionProcessingTxt2Img(**kwargs)
    p.fill_fields_from_opts()
    return p


def and_prompt_conds(tokens_c=4, tokens_u=4, dim=8):
    """image 0: two AND sub-prompts (weights 1.0, 0.5); image 1: one prompt."""
    c = [torch.full((tokens_c, dim), float(v)) for v in (1, 2, 3)]
    u = [torch.full((tokens_u, dim), float(v)) for v in (10, 20)]
    cond = prompt_parser.multicond_from_tensors([[(c[0], 1.0), (c[1], 0.5)], [(c[2], 1.0)]])
    uncond = prompt_parser.learned_from_tensors(u)
    return cond, uncond


def call_denoiser(sampler, p, x, sigma, cond, uncond, cond_scale=7.0, s_min_uncond=0.0):
    sampler.initialize(p)
    denoiser = sampler.model_wrap_cfg
    denoiser.total_steps = 10
    image_cond = x.new_zeros(x.shape[0], 5, 1, 1)
    return denoiser(x, sigma, uncond=uncond, cond=cond, cond_scale=cond_scale, s_min_uncond=s_min_uncond, image_cond=image_cond)


# --------------------------------------------------------------------------- CFG denoiser

def test_cfg_row_layout_batch2_with_and_prompt_and_callback_order():
    model = echo_model()
    sampler = sd_samplers.create_sampler("Euler", model)
    p = bare_p(batch_size=2)
    cond, uncond = and_prompt_conds()
    x = torch.stack([torch.full((4, 4, 4), 1.0), torch.full((4, 4, 4), 2.0)])
    sigma = torch.tensor([3.0, 3.0])

    events = []

    def on_denoiser(params):
        events.append(("denoiser", params.denoiser.step))
        assert params.x.shape[0] == 5
        assert [float(r.mean()) for r in params.x] == [1.0, 1.0, 2.0, 1.0, 2.0]  # cond rows (x0 twice), then uncond rows
        assert params.sigma.tolist() == [3.0] * 5
        assert [float(r.mean()) for r in params.text_cond] == [1.0, 2.0, 3.0]
        assert [float(r.mean()) for r in params.text_uncond] == [10.0, 20.0]
        assert params.image_cond.shape[0] == 5

    def on_denoised(params):
        events.append(("denoised", len(model.calls)))
        events.append(("x_out", params.x.clone()))
        assert isinstance(params.inner_model, __import__("k_diffusion").external.CompVisDenoiser)

    def on_after(params):
        events.append(("after", None))

    script_callbacks.on_cfg_denoiser(on_denoiser)
    script_callbacks.on_cfg_denoised(on_denoised)
    script_callbacks.on_cfg_after_cfg(on_after)

    denoised = call_denoiser(sampler, p, x, sigma, cond, uncond)

    assert [e[0] for e in events] == ["denoiser", "denoised", "x_out", "after"]
    assert events[0][1] == 0 and sampler.model_wrap_cfg.step == 1
    assert len(model.calls) == 1 and model.calls[0]["rows"] == 5  # batch_cond_uncond: one call
    ctx = model.calls[0]["cond"]["c_crossattn"][0]
    assert [float(r.mean()) for r in ctx] == [1.0, 2.0, 3.0, 10.0, 20.0]
    assert "c_concat" in model.calls[0]["cond"]

    x_out = events[2][1]
    expected = x_out[-2:].clone()
    expected[0] += (x_out[0] - x_out[3]) * 7.0 + (x_out[1] - x_out[3]) * 0.5 * 7.0
    expected[1] += (x_out[2] - x_out[4]) * 7.0
    assert torch.allclose(denoised, expected)


def test_split_calls_keep_uncond_last():
    model = echo_model()
    shared.opts.batch_cond_uncond = False
    sampler = sd_samplers.create_sampler("Euler", model)
    cond, uncond = and_prompt_conds()
    x = torch.randn(2, 4, 4, 4)
    call_denoiser(sampler, bare_p(batch_size=2), x, torch.tensor([2.0, 2.0]), cond, uncond)
    # equal token counts: chunks of batch_size rows over [c0, c1, c2, u0, u1]
    assert [c["rows"] for c in model.calls] == [2, 2, 1]
    assert [float(r.mean()) for r in model.calls[-1]["cond"]["c_crossattn"][0]] == [20.0]

    model.calls.clear()
    shared.opts.batch_cond_uncond = True
    cond, uncond = and_prompt_conds(tokens_c=4, tokens_u=6)  # different token counts
    call_denoiser(sampler, bare_p(batch_size=2), x, torch.tensor([2.0, 2.0]), cond, uncond)
    # cond rows in chunks of 2*batch_size, then one separate uncond call for the last rows
    assert [c["rows"] for c in model.calls] == [3, 2]
    assert [float(r.mean()) for r in model.calls[-1]["cond"]["c_crossattn"][0]] == [10.0, 20.0]


def test_skip_uncond_appends_fake_uncond_copies():
    model = echo_model()
    shared.opts.skip_early_cond = 1.0
    sampler = sd_samplers.create_sampler("Euler", model)
    p = bare_p(batch_size=2)
    cond, uncond = and_prompt_conds()
    seen = {}
    script_callbacks.on_cfg_denoised(lambda params: seen.setdefault("x", params.x.clone()))
    call_denoiser(sampler, p, torch.randn(2, 4, 4, 4), torch.tensor([2.0, 2.0]), cond, uncond)
    assert model.calls[0]["rows"] == 3  # uncond rows dropped
    x_out = seen["x"]
    assert x_out.shape[0] == 5
    assert torch.equal(x_out[3], x_out[0]) and torch.equal(x_out[4], x_out[2])  # first cond row of each image
    assert p.extra_generation_params["Skip Early CFG"] == 1.0


def test_sdxl_dict_conds_make_condition_dict():
    model = echo_model("sdxl")
    sampler = sd_samplers.create_sampler("Euler", model)
    vec = torch.ones(4)
    c = {"crossattn": torch.full((4, 8), 1.0), "vector": vec}
    u = {"crossattn": torch.full((4, 8), 5.0), "vector": vec}
    cond = prompt_parser.multicond_from_tensors([[(c, 1.0)]])
    uncond = prompt_parser.learned_from_tensors([u])
    seen = {}
    script_callbacks.on_cfg_denoiser(lambda params: seen.setdefault("text_cond", params.text_cond))
    out = call_denoiser(sampler, bare_p(), torch.randn(1, 4, 4, 4), torch.tensor([1.0]), cond, uncond)
    assert isinstance(seen["text_cond"], dict) and set(seen["text_cond"]) == {"crossattn", "vector"}
    passed = model.calls[0]["cond"]
    assert set(passed) == {"crossattn", "vector", "c_concat"}
    assert passed["crossattn"].shape[0] == 2 and passed["vector"].shape == (2, 4)
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- step counting

def _record_steps():
    seen = []
    script_callbacks.on_cfg_denoiser(lambda params: seen.append((params.sampling_step, params.total_sampling_steps, params.denoiser.step)))
    return seen


def test_step_counting_txt2img_euler():
    echo_model()
    seen = _record_steps()
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=5, sampler_name="Euler", width=32, height=32, seed=1)
    processing.process_images(p)
    assert [s[1] for s in seen] == [5] * 5
    assert [s[0] for s in seen] == [0, 0, 1, 2, 3]  # set by callback_state *after* each step
    assert [s[2] for s in seen] == [0, 1, 2, 3, 4]


def test_second_order_sampler_doubles_total_steps_and_karras_default():
    model = echo_model()
    seen = []
    script_callbacks.on_cfg_denoiser(lambda params: seen.append((params.sampling_step, params.denoiser.total_steps)))
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=3, sampler_name="Heun", width=32, height=32, seed=1)
    processing.process_images(p)
    assert len(model.calls) == 5 and {s[1] for s in seen} == {6}  # Heun: 2 calls per step except the last
    assert [s[0] for s in seen] == [0, 0, 0, 1, 1]

    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=3, width=32, height=32, seed=1)
    processing.process_images(p)
    assert p.sampler_name == "DPM++ 2M" and p.scheduler == "Automatic"
    assert p.extra_generation_params["Schedule type"] == "Karras"


def test_step_counting_img2img_is_t_enc_plus_one():
    model = echo_model()
    seen = _record_steps()
    p = processing.StableDiffusionProcessingImg2Img(prompt="a", steps=10, sampler_name="Euler", width=32, height=32, denoising_strength=0.5, seed=1)
    p.init_latent = torch.zeros(1, 4, 4, 4)
    processing.process_images(p)
    assert shared.state.sampling_steps == 6 and {s[1] for s in seen} == {6}
    assert len(model.calls) == 6

    assert sd_samplers_common.setup_img2img_steps(p) == (10, 5)
    shared.opts.img2img_fix_steps = True
    assert sd_samplers_common.setup_img2img_steps(p) == (20, 9)


def test_step_counting_hires_second_pass_and_hook_order():
    echo_model()
    seen = _record_steps()
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=4, sampler_name="Euler", width=32, height=32, seed=1,
                                                    enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, denoising_strength=0.5, hr_upscaler="Latent")
    processing.process_images(p)
    totals = [s[1] for s in seen]
    assert totals == [4] * 4 + [3] * 3  # hires: t_enc + 1 with t_enc = hr_second_pass_steps - 1
    assert p.hr_upscale_to_x == 64 and p.extra_generation_params["Hires upscale"] == 2.0


def test_ddim_timesteps_loop():
    model = echo_model()
    seen = []
    script_callbacks.on_cfg_denoiser(lambda params: seen.append(params.sigma.clone()))
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=5, sampler_name="DDIM", width=32, height=32, seed=1)
    processing.process_images(p)
    assert shared.state.sampling_steps == 5
    assert len(seen) == 4  # len(timesteps) - 1 model calls
    assert [int(s[0]) for s in seen] == [801, 601, 401, 201]  # "sigma" is an integer timestep
    assert torch.equal(model.calls[0]["t"], seen[0][:1].repeat(2))


# --------------------------------------------------------------------------- real ldm UNet

def test_toy_euler_and_ddim_with_real_ldm_unet_are_finite():
    model = standin.use_model(standin_sd_model.make_model("sd1", tokens=4, context_dim=32))
    for sampler_name in ("Euler", "DPM++ 2M", "DDIM"):
        p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat AND a dog:0.5", negative_prompt="blurry", steps=3,
                                                        sampler_name=sampler_name, width=64, height=64, batch_size=2, seed=3)
        p.do_not_save_grid = True
        processed = processing.process_images(p)
        assert len(processed.images) == 2
        assert torch.isfinite(shared.state.current_latent).all()
    assert all(c["rows"] == 6 for c in model.calls)  # 2 images x 2 AND sub-prompts + 2 uncond rows


# --------------------------------------------------------------------------- scripts machinery

EXTENSION_SCRIPT = '''
import gradio as gr
from modules import scripts, script_callbacks
from modules.ui_components import InputAccordion
import ext_helper_lib

LOG = []
SEEN_BASEDIR = scripts.basedir()


def _before_ui():
    import standin
    xyz = standin.xyz_grid_module()
    xyz.axis_options.append(xyz.AxisOption("[Test] Ratio", float, xyz.apply_field("test_ratio")))


script_callbacks.on_before_ui(_before_ui)


class TestExt(scripts.Script):
    ui_calls = 0

    def title(self):
        return "Test Ext"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        TestExt.ui_calls += 1
        with InputAccordion(False, label="Test Ext") as enabled:
            ratio = gr.Slider(label="Ratio", minimum=0, maximum=1, value=0.25)
        self.infotext_fields = [(enabled, lambda d: "Test ratio" in d), (ratio, "Test ratio")]
        self.paste_field_names = ["Test ratio"]
        return [enabled, ratio]

    def setup(self, p, *args):
        LOG.append(("setup", args, p.steps))

    def before_process(self, p, *args):
        LOG.append(("before_process", args))

    def process(self, p, *args):
        LOG.append(("process", args))
        p.extra_generation_params["Test ratio"] = getattr(p, "test_ratio", args[1])

    def before_process_batch(self, p, *args, **kwargs):
        LOG.append(("before_process_batch", args, sorted(kwargs)))

    def after_extra_networks_activate(self, p, *args, **kwargs):
        LOG.append(("after_extra_networks_activate", args))

    def process_batch(self, p, *args, **kwargs):
        LOG.append(("process_batch", args))
        raise RuntimeError("swallowed")

    def process_before_every_sampling(self, p, *args, **kwargs):
        LOG.append(("process_before_every_sampling", args, sorted(kwargs), type(p.sampler).__name__))

    def post_sample(self, p, ps, *args):
        LOG.append(("post_sample", args))

    def postprocess_batch(self, p, *args, **kwargs):
        LOG.append(("postprocess_batch", args, sorted(kwargs)))

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        LOG.append(("postprocess_batch_list", args))

    def postprocess_image(self, p, pp, *args):
        LOG.append(("postprocess_image", args))

    def postprocess(self, p, processed, *args):
        LOG.append(("postprocess", args))
'''


@pytest.fixture
def extension(tmp_path):
    root = tmp_path / "sd-webui-test-ext"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "test_ext.py").write_text(textwrap.dedent(EXTENSION_SCRIPT))
    (root / "ext_helper_lib.py").write_text("VALUE = 1\n")
    echo_model()
    standin.load_scripts([str(root)])
    standin.start_ui()
    module = next(d.module for d in scripts.scripts_data if d.script_class.__name__ == "TestExt")
    return root, module


def test_script_loading_args_slice_and_hook_order(extension):
    root, module = extension
    cls = module.TestExt
    assert cls.__module__ == "test_ext.py"
    assert module.SEEN_BASEDIR == str(root)
    assert str(root) not in sys.path
    runner = scripts.scripts_txt2img
    script = runner.script("test ext")
    assert script.alwayson and script.args_to - script.args_from == 2
    assert runner.inputs[0] is not None and runner.inputs[script.args_from] is script.controls[0]
    assert script.api_info.name == "test ext" and script.api_info.args[1].value == 0.25
    assert any(key == "Test ratio" for _, key in runner.infotext_fields)
    assert "Test ratio" in runner.paste_field_names
    assert cls.ui_calls == 2 + 2 * 2  # UI once per tab, then twice per runner for the API defaults

    args = standin.script_args_for(runner, "Test Ext", [True, 0.75])
    p = standin.txt2img(script_args=args, prompt="a", width=32, height=32)
    assert module.LOG[0] == ("setup", (True, 0.75), 50)  # built-in Sampler.setup runs after extensions
    assert p.steps == 20 and p.sampler_name == "DPM++ 2M"  # first visible sampler, as in the WebUI
    p.steps = 2
    processed = standin.run(p)
    names = [entry[0] for entry in module.LOG]
    assert names == ["setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
                     "process_batch", "process_before_every_sampling", "post_sample", "postprocess_batch",
                     "postprocess_batch_list", "postprocess_image", "postprocess"]
    assert all(entry[1] == (True, 0.75) for entry in module.LOG)
    assert module.LOG[3][2] == ["batch_number", "prompts", "seeds", "subseeds"]
    assert module.LOG[6][2] == ["c", "noise", "uc", "x"] and module.LOG[6][3] == "KDiffusionSampler"
    assert any(r["exception"] == "swallowed" for r in errors.exception_records)  # hook exceptions are reported, not raised
    assert "Test ratio: 0.75" in processed.info


def test_api_alwayson_args_mapping(extension):
    runner = scripts.scripts_txt2img
    script = runner.script("Test Ext")
    defaults = standin.api.default_script_arg_txt2img
    assert defaults[script.args_from:script.args_to] == [False, 0.25]
    req = api_module.SimpleRequest(alwayson_scripts={"TEST EXT": {"args": [True]}})
    args = standin.api.init_script_args(req, defaults, None, None, runner)
    assert args[script.args_from:script.args_to] == [True, 0.25]
    with pytest.raises(Exception) as err:
        standin.api.init_script_args(api_module.SimpleRequest(alwayson_scripts={"nope": {}}), defaults, None, None, runner)
    assert getattr(err.value, "status_code", None) == 422
    with pytest.raises(Exception) as err:
        standin.api.init_script_args(api_module.SimpleRequest(alwayson_scripts={"X/Y/Z plot": {"args": []}}), defaults, None, None, runner)
    assert getattr(err.value, "status_code", None) == 422

    mentioned = {}
    req = api_module.SimpleRequest(infotext="a\nSteps: 3, Sampler: Euler, Test ratio: 0.5", prompt="kept")
    standin.api.apply_infotext(req, "txt2img", script_runner=runner, mentioned_script_args=mentioned)
    assert mentioned[script.args_from] is True and mentioned[script.args_from + 1] == 0.5
    assert req.prompt == "kept" and req.steps == 3


def test_xyz_axis_registration_and_cells(extension):
    xyz = standin.xyz_grid_module()
    xyz_script = scripts.scripts_txt2img.script("X/Y/Z plot")
    labels = [a.label for a in xyz_script.current_axis_options]
    assert "[Test] Ratio" in labels and "Image CFG Scale" not in labels
    assert standin.register_xyz_grid("scripts.xyz_grid").__name__ == "scripts.xyz_grid"
    assert standin.xyz_grid_module() is xyz

    p = standin.txt2img(prompt="a", width=32, height=32)
    p.steps = 2
    axis = xyz.axis_by_label("[Test] Ratio")
    pc, processed = xyz.run_cell(p, [(axis, 0.9), (xyz.axis_by_label("CFG Scale"), 3.0)])
    assert pc.test_ratio == 0.9 and pc.cfg_scale == 3.0 and not hasattr(p, "test_ratio")
    assert pc.script_args is p.script_args  # shallow copy
    assert "Test ratio: 0.9" in processed.info

    override = xyz.apply_override("skip_early_cond")
    q = processing.StableDiffusionProcessingTxt2Img()
    override(q, 0.5, [0.5])
    assert q.override_settings == {"skip_early_cond": 0.5}
    xyz.apply_override("batch_cond_uncond", boolean=True)(q, "False", [])
    assert q.override_settings["batch_cond_uncond"] is False
    assert xyz.boolean_choice(reverse=True)() == ["False", "True"]
    assert xyz.format_value_add_label(None, axis, 0.123456789) == "[Test] Ratio: 0.12345679"
    assert xyz.format_value(None, axis, 2) == 2
    with pytest.raises(ValueError):
        xyz.confirm_range(0, 1, "[Test] Ratio")(None, [0.5, 2.0])


def test_xyz_run_with_vary_and_range_parsing(extension):
    runner = scripts.scripts_txt2img
    xyz_script = runner.script("X/Y/Z plot")
    idx = [a.label for a in xyz_script.current_axis_options].index("[Test] Ratio")
    base = list(standin.ui_script_args(runner))
    values = [idx, "0.1-0.3 (+0.1)", None, 0, "", None, 0, "", None, True, False, False, False, False, False, False, 0, True]
    base[0] = runner.selectable_scripts.index(xyz_script) + 1
    args = standin.script_args_for(runner, "X/Y/Z plot", values, base=base)
    p = standin.txt2img(script_args=args, prompt="a", width=32, height=32)
    p.steps = 1
    processed = standin.run(p)
    ratios = [float(infotext_utils.parse_generation_parameters(r.info)["Test ratio"]) for r in processed.cell_results]
    # the real range parser uses np.arange(start, end + step, step): float steps can overshoot
    assert [round(r, 6) for r in ratios] == [0.1, 0.2, 0.3, 0.4]
    # cells are shallow copies: extra_generation_params is one dict shared by p and every cell
    assert all(r.extra_generation_params is p.extra_generation_params for r in processed.cell_results)


# --------------------------------------------------------------------------- infotext

def test_create_infotext_joins_like_the_webui():
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a", steps=3, sampler_name="Euler", width=32, height=32, batch_size=2)
    p.setup_prompts()
    p.all_seeds = [5, 6]
    p.all_subseeds = [0, 0]
    p.extra_generation_params.update({
        "Sloth ratio": 0.5,
        "Near-sighted tile/size": "24, 32",
        "Note": "a: b",
        "Unset": None,
        "Per image": ["first", "second"],
        "Computed": lambda p, index, **kwargs: f"idx{index}",
        "Bracket [x] key": 1,
    })
    text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, position_in_batch=1)
    last = text.split("\n")[-1]
    assert 'Near-sighted tile/size: "24, 32"' in last and 'Note: "a: b"' in last
    assert "Unset" not in last and "Per image: second" in last and "Computed: idx1" in last
    assert "Seed: 6" in last

    params = infotext_utils.parse_generation_parameters(text)
    assert params["Sloth ratio"] == "0.5"
    assert params["Near-sighted tile/size"] == "24, 32"
    assert params["Note"] == "a: b"
    assert params["Per image"] == "second" and params["Computed"] == "idx1"
    assert "Bracket [x] key" not in params and params["key"] == "1"  # '[' keys do not round-trip
    assert params["Size-1"] == "32" and params["Size-2"] == "32"
    assert params["Clip skip"] == "1" and params["Schedule type"] == "Automatic"


def test_parse_needs_three_params_on_last_line_and_skip_fields():
    params = infotext_utils.parse_generation_parameters("a prompt\nNegative prompt: bad\nSteps: 3, Seed: 1")
    assert "Steps" not in params and params["Negative prompt"] == "bad\nSteps: 3, Seed: 1"
    shared.opts.infotext_skip_pasting = ["Seed"]
    params = infotext_utils.parse_generation_parameters("p\nSteps: 3, Seed: 1, My-key/x: y")
    assert "Seed" not in params and params["My-key/x"] == "y"


def test_apply_paste_coercion_and_pasted_callback():
    with gr.Blocks():
        enabled = gr.Checkbox(value=True)
        ratio = gr.Slider(minimum=0, maximum=1, value=0.5)
        count = gr.Slider(minimum=0, maximum=10, step=1, value=2)
        flag = gr.Checkbox(value=True)
        untouched = gr.Slider(value=0.3)
        acc = InputAccordion(False, label="Acc")

    def migrate(infotext, params):
        if "Old ratio" in params:
            params["Sloth ratio"] = params.pop("Old ratio")

    script_callbacks.on_infotext_pasted(migrate)
    fields = [
        (enabled, lambda d: "Sloth ratio" in d),
        (ratio, "Sloth ratio"),
        (count, "Sloth count"),
        (flag, "Sloth flag"),
        (untouched, "Missing key"),
        (acc, lambda d: "Sloth ratio" in d),
    ]
    res = infotext_utils.apply_paste("p\nSteps: 3, Old ratio: 0.75, Sloth count: 4, Sloth flag: False", fields)
    assert res[0]["value"] is True and res[1]["value"] == 0.75
    assert res[2]["value"] == 4.0 and isinstance(res[2]["value"], float)  # int components go through float()
    assert res[3]["value"] is False
    assert "value" not in res[4]  # None -> gr.update(): component left unchanged
    assert res[5]["value"] is True

    res = infotext_utils.apply_paste("p\nSteps: 3, Seed: 1, Sampler: Euler", fields)
    assert res[0]["value"] is False and "value" not in res[1]


def test_generation_parameters_copypaste_alias():
    import modules.generation_parameters_copypaste as old
    assert old is infotext_utils


# --------------------------------------------------------------------------- small modules

def test_callbacks_removal_reverse_order_and_swallowing():
    order = []
    script_callbacks.on_before_ui(lambda: order.append(1))
    script_callbacks.on_before_ui(lambda: order.append(2))
    script_callbacks.before_ui_callback()
    assert order == [2, 1]

    def boom(params):
        raise ValueError("boom")

    script_callbacks.on_cfg_denoiser(boom, name="boom")
    names = [c.name for c in script_callbacks.callback_map["callbacks_cfg_denoiser"]]
    assert names == ["base/test_standin_a1111.py/cfg_denoiser/boom"]
    script_callbacks.cfg_denoiser_callback(None)
    assert errors.exception_records[-1]["exception"] == "boom"
    script_callbacks.remove_callbacks_for_function(boom)
    assert script_callbacks.callback_map["callbacks_cfg_denoiser"] == []
    script_callbacks.on_cfg_denoised(boom)
    script_callbacks.remove_current_script_callbacks()
    assert all(not v for v in script_callbacks.callback_map.values())


def test_patches_and_options():
    class Target:
        def f(self):
            return "orig"

    orig = patches.patch("key", Target, "f", lambda self: "new")
    assert Target().f() == "new" and patches.original("key", Target, "f") is orig
    with pytest.raises(RuntimeError):
        patches.patch("key", Target, "f", lambda self: "again")
    patches.undo("key", Target, "f")
    assert Target().f() == "orig"
    with pytest.raises(RuntimeError):
        patches.undo("key", Target, "f")

    assert shared.opts.batch_cond_uncond is True and shared.opts.upcast_attn is False
    shared.opts.add_option("sloth_x", shared.OptionInfo(3, "x", section=("sloth", "Sloth")))
    assert shared.opts.sloth_x == 3 and shared.opts.data["sloth_x"] == 3
    calls = []
    shared.opts.onchange("sloth_x", lambda: calls.append(shared.opts.sloth_x), call=False)
    assert shared.opts.set("sloth_x", 4) is True and calls == [4]
    assert getattr(shared.opts, "no_such_option", "dflt") == "dflt"
    with pytest.raises(KeyError):
        shared.opts.set("no_such_option", 1)


def test_input_accordion_and_elem_id():
    with gr.Blocks():
        acc = InputAccordion(True, label="Sloth", elem_id="sloth_acc")
        with acc:
            with acc.extra():
                pass
            inner = gr.Slider(value=0.1)
    assert acc.value is True and acc.elem_id == "sloth_acc-checkbox" and acc.visible is False
    assert acc.accordion.elem_id == "sloth_acc" and acc.accordion.open is True and acc.accordion.label == "Sloth"
    assert inner.value == 0.1

    class S(scripts.Script):
        def title(self):
            return "Sloth: Attention!"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

    s = S()
    s.is_img2img = True
    assert s.elem_id("ratio") == "script_img2img_sloth_attention_ratio"
