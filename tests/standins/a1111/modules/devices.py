"""Stand-in for A1111 v1.10.1 ``modules/devices.py`` (written from the API, not the real code).

CPU-only: ``device``/``cpu`` are ``torch.device("cpu")`` and every dtype is
``torch.float32`` (the real file defaults to float16 and switches at start-up).
``autocast()`` / ``without_autocast()`` are no-op context managers, as the real
ones are when the inference dtype is float32.  ``torch_gc`` does nothing.
"""
import contextlib

import torch

cpu: torch.device = torch.device("cpu")
fp8: bool = False
force_fp16: bool = False
device: torch.device = cpu
device_interrogate: torch.device = cpu
device_gfpgan: torch.device = cpu
device_esrgan: torch.device = cpu
device_codeformer: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
dtype_inference: torch.dtype = torch.float32
unet_needs_upcast = False


def has_xpu() -> bool:
    return False


def has_mps() -> bool:
    return False


def get_optimal_device_name():
    return "cpu"


def get_optimal_device():
    return cpu


def get_device_for(task):
    return cpu


def torch_gc():
    pass


def cond_cast_unet(input):
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x, where):
    """The stand-in always behaves as with ``--disable-nan-check``."""
    return
