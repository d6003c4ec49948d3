"""Device-dependent calls are valid on CPU, CUDA, MPS and XPU for torch >= 2.1 (issue 10 item 6).

No MPS or XPU device exists in CI, so the two things that broke on a Mac are stubbed from what
torch does there:

- torch < 2.5 (A1111's macOS install pins torch 2.3.1, `webui-macos-env.sh`) rejects
  `torch.autocast(device_type="mps", ...)` in `torch/amp/autocast_mode.py` `autocast.__init__`
  with RuntimeError "User specified an unsupported autocast device_type 'mps'", whatever `enabled`
  says; it accepts "cpu", "cuda", "xpu" and "hpu".
- the MPS backend has no float64: converting an MPS tensor to float64 raises TypeError
  ("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64").

`MpsLike` is a CPU tensor that reports device "mps" and refuses float64 the same way, so the
engine's code paths run as they would on a Mac.
"""
import pytest
import torch
from ldm.modules.attention import CrossAttention
from torch.overrides import TorchFunctionMode

from lib_sloth.attention import autocast_off
from lib_sloth.prediction import NoiseSpace
from lib_sloth.sag_capture import attention_with_map

MPS = torch.device("mps")


class MpsLike(torch.Tensor):
    """A CPU tensor standing for an MPS one (ops on it keep the type: torch's default for subclasses)."""


class FakeMps(TorchFunctionMode):
    """While active: MpsLike tensors report device "mps" and refuse float64 like the MPS backend;
    moving any tensor to "mps" gives an MpsLike (the data stays on the CPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on_mps = bool(args) and isinstance(args[0], MpsLike)
        if func == torch.Tensor.device.__get__ and on_mps:
            return MPS
        if on_mps and (func is torch.Tensor.double or (func is torch.Tensor.to and _asks_float64(args, kwargs))):
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't "
                            "support float64. Please use float32 instead.")
        if func is torch.Tensor.to and _asks_mps(args, kwargs):
            rest = [a for a in args[1:] if not _is_mps(a)]
            kwargs = {k: v for k, v in kwargs.items() if k != "device"}
            return func(args[0], *rest, **kwargs).as_subclass(MpsLike)
        if func is torch.Tensor.cpu and on_mps:
            return args[0].as_subclass(torch.Tensor).clone()
        return func(*args, **kwargs)


def _is_mps(a):
    return isinstance(a, (str, torch.device)) and torch.device(a).type == "mps"


def _asks_float64(args, kwargs):
    return kwargs.get("dtype") is torch.float64 or any(a is torch.float64 for a in args[1:])


def _asks_mps(args, kwargs):
    return any(_is_mps(a) for a in (kwargs.get("device"), *args[1:]))


def mps_like(t: torch.Tensor) -> MpsLike:
    return t.as_subclass(MpsLike)


def plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor)


@pytest.fixture
def torch_2_3_autocast(monkeypatch):
    """torch.autocast as torch 2.3 constructs it: no MPS."""
    real = torch.autocast

    def autocast(device_type, *args, **kwargs):
        if device_type not in ("cpu", "cuda", "xpu", "hpu"):
            raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", autocast)


def test_the_stub_refuses_what_mps_refuses():
    with FakeMps():
        t = mps_like(torch.ones(3))
        assert t.device.type == "mps" and (t * 2).device.type == "mps"
        assert torch.ones(2).to(t.device).device.type == "mps"
        with pytest.raises(TypeError):
            t.double()
        with pytest.raises(TypeError):
            t.to(torch.float64)


@pytest.mark.parametrize("device_type", ["cpu", "cuda", "xpu", "mps"])
def test_autocast_off_is_valid_for_every_device_type_on_torch_2_3(torch_2_3_autocast, device_type):
    with autocast_off(device_type):
        pass


def test_autocast_off_really_turns_cpu_autocast_off():
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(a, a).dtype == torch.bfloat16
        with autocast_off("cpu"):
            assert torch.mm(a, a).dtype == torch.float32


def test_sag_map_capture_runs_on_mps_with_torch_2_3(torch_2_3_autocast):
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=16, heads=2, dim_head=8)
    x = torch.randn(2, 6, 16)
    expected_out, expected_probs = attention_with_map(attn, x, x, x, [1])
    with FakeMps():
        out, probs = attention_with_map(attn, mps_like(x), mps_like(x), mps_like(x), [1])
        assert out.device.type == "mps"
    # the fake device keeps the data on the CPU: the same kernels, so the same bits
    assert torch.equal(plain(out), expected_out)
    assert torch.equal(plain(probs), expected_probs)


def test_timestep_noise_space_never_asks_mps_for_float64():
    """A1111's DDIM / PLMS / UniPC SAG path: alphas_cumprod and the latent live on the MPS device."""
    acp = torch.linspace(0.999, 0.01, 1000)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([999, 500])
    expected = NoiseSpace.from_alphas_cumprod(acp, t, like=x)
    with FakeMps():
        space = NoiseSpace.from_alphas_cumprod(mps_like(acp), mps_like(t), like=mps_like(x))
        for got, want in ((space.a, expected.a), (space.b, expected.b)):
            assert got.dtype == torch.float32 and got.device.type == "mps"
            assert torch.equal(plain(got), want)
