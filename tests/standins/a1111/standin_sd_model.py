"""A tiny LatentDiffusion-like model for tests of the A1111 stand-in (not a WebUI file).

``TinyLatentDiffusion(unet, kind="sd1"|"sd2"|"sdxl", ...)`` exposes what the WebUI's
sampling path reads from ``shared.sd_model``:

* ``alphas_cumprod`` (ldm's linear schedule: 0.00085 -> 0.012 over 1000 steps, float32),
  ``parameterization`` ("eps"), ``cond_stage_key`` ("txt"), ``latent_channels``,
  flags ``is_sd1``/``is_sd2``/``is_sdxl``/``is_ssd``/``is_sd3``/``is_sdxl_inpaint``,
  ``sd_checkpoint_info.name_for_extra``, ``sd_model_hash``,
  ``cond_stage_model_empty_prompt``;
* ``model`` -- a wrapper holding ``.diffusion_model = unet`` and ``.conditioning_key``
  ("crossattn"); for SD1/SD2 it behaves like ldm's ``DiffusionWrapper``
  (``diffusion_model(x, t, context=torch.cat(c_crossattn, 1))``, positional ``x, t``),
  for SDXL like sgm's ``OpenAIWrapper`` (``diffusion_model(x, timesteps=t,
  context=c["crossattn"], y=c["vector"])``, keywords);
* ``apply_model(x, t, cond)`` -- called by the k-diffusion and timestep wrappers as
  ``apply_model(x, t, cond=<condition dict>)`` (``cond`` is a *keyword*; a wrapper
  around it must accept that); ldm semantics for SD1/SD2 (a non-dict cond is wrapped
  as ``{"c_crossattn": [cond]}``), the WebUI's SDXL ``apply_model`` otherwise;
* ``get_learned_conditioning(texts)`` -- a deterministic text -> tensor stand-in for
  CLIP (``(B, tokens, context_dim)``; SDXL: dict with ``crossattn`` and ``vector``);
* ``decode_first_stage``/``encode_first_stage``/``get_first_stage_encoding`` -- a cheap
  x8 fake VAE, so the processing pipeline can produce images.

``tiny_unet(kind)`` builds a small random-weight ``ldm`` ``UNetModel`` suitable for it;
``ContextEchoUNet`` is a parameter-free "UNet" whose epsilon for each row is the mean
of that row's context, which makes the CFG batch layout observable and is fast.
"""
import contextlib
import types
import zlib

import torch
from torch import nn


def make_alphas_cumprod(linear_start=0.00085, linear_end=0.012, n_timestep=1000):
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class _LdmWrapper(nn.Module):
    def __init__(self, unet, conditioning_key):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat=None, c_crossattn=None, c_adm=None):
        if self.conditioning_key == 'crossattn':
            return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))
        if self.conditioning_key == 'crossattn-adm':
            return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1), y=c_adm)
        if self.conditioning_key == 'hybrid':  # inpainting and InstructPix2Pix: image latent concatenated
            return self.diffusion_model(torch.cat([x] + c_concat, dim=1), t, context=torch.cat(c_crossattn, 1))
        raise NotImplementedError(self.conditioning_key)


class _SgmWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = 'crossattn'

    def forward(self, x, t, c, **kwargs):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn", None), y=c.get("vector", None), **kwargs)


class TinyLatentDiffusion(nn.Module):
    def __init__(self, unet, kind="sd1", context_dim=None, tokens=77, adm_dim=None, parameterization="eps"):
        super().__init__()
        assert kind in ("sd1", "sd2", "sdxl")
        self.kind = kind
        self.is_sd1 = kind == "sd1"
        self.is_sd2 = kind == "sd2"
        self.is_sdxl = kind == "sdxl"
        self.is_ssd = False
        self.is_sd3 = False
        self.is_sdxl_inpaint = False
        self.parameterization = parameterization
        self.cond_stage_key = "txt"
        self.latent_channels = 4
        self.tokens = tokens
        self.context_dim = context_dim if context_dim is not None else getattr(unet, "context_dim", None) or 32
        self.adm_dim = adm_dim
        self.model = _SgmWrapper(unet) if self.is_sdxl else _LdmWrapper(unet, 'crossattn')
        self.register_buffer('alphas_cumprod', make_alphas_cumprod())
        self.sd_checkpoint_info = types.SimpleNamespace(name_for_extra=f"tiny-{kind}", title=f"tiny-{kind}", short_title="tiny")
        self.sd_model_hash = "0123456789"
        self.cond_stage_model_empty_prompt = self._text_tensor("")[None]
        self.calls = []
        """one dict per ``apply_model`` call: ``rows``, ``x``, ``t``, ``cond`` (for batch-layout tests)."""

    def ema_scope(self):
        return contextlib.nullcontext()

    def _text_tensor(self, text):
        gen = torch.Generator().manual_seed(zlib.crc32(text.encode("utf8")))
        return torch.randn((self.tokens, self.context_dim), generator=gen)

    def get_learned_conditioning(self, texts):
        crossattn = torch.stack([self._text_tensor(t) for t in texts])
        if not self.is_sdxl:
            return crossattn
        vec = []
        for t in texts:
            gen = torch.Generator().manual_seed(zlib.crc32(("vector:" + t).encode("utf8")))
            vec.append(torch.randn((self.adm_dim,), generator=gen))
        return {"crossattn": crossattn, "vector": torch.stack(vec)}

    def apply_model(self, x, t, cond):
        self.calls.append({"rows": int(x.shape[0]), "x": x.detach().clone(), "t": t.detach().clone() if torch.is_tensor(t) else t, "cond": cond})
        if self.is_sdxl:
            return self.model(x, t, cond)
        if not isinstance(cond, dict):
            if not isinstance(cond, list):
                cond = [cond]
            cond = {'c_crossattn': cond}
        out = self.model(x, t, **cond)
        return out[0] if isinstance(out, tuple) else out

    def decode_first_stage(self, z):
        img = torch.tanh(z[:, :3])
        return torch.nn.functional.interpolate(img, scale_factor=8, mode="nearest")

    def encode_first_stage(self, x):
        small = torch.nn.functional.avg_pool2d(x, 8)
        return torch.cat([small, small.mean(dim=1, keepdim=True)], dim=1)

    def get_first_stage_encoding(self, encoder_posterior):
        return encoder_posterior


class ContextEchoUNet(nn.Module):
    def __init__(self, context_dim=32):
        super().__init__()
        self.context_dim = context_dim

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        per_row = context.float().mean(dim=(1, 2))
        if y is not None:
            per_row = per_row + y.float().mean(dim=1)
        return torch.zeros_like(x) + per_row[:, None, None, None].to(x.dtype)


def tiny_unet(kind="sd1", context_dim=32, model_channels=32, adm_dim=16, in_channels=4):
    """A very small random-weight ``ldm`` UNet (two levels, attention at both)."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    kwargs = dict(image_size=8, in_channels=in_channels, out_channels=4, model_channels=model_channels,
                  attention_resolutions=[1, 2], num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16,
                  use_spatial_transformer=True, transformer_depth=1, context_dim=context_dim, legacy=False)
    if kind == "sdxl":
        kwargs.update(num_classes="sequential", adm_in_channels=adm_dim)
    torch.manual_seed(0)
    unet = UNetModel(**kwargs).eval()
    unet.context_dim = context_dim
    return unet


def make_edit_model(tokens=8, context_dim=32):
    """An InstructPix2Pix-like model: ``cond_stage_key == "edit"``, ``hybrid`` conditioning (the
    source image's latent concatenated to x, so the UNet takes 8 channels), as ldm's
    ``LatentDiffusion`` with ``conditioning_key: hybrid`` and ``cond_stage_key: edit`` is set up."""
    model = TinyLatentDiffusion(tiny_unet("sd1", context_dim=context_dim, in_channels=8), kind="sd1",
                                context_dim=context_dim, tokens=tokens)
    model.cond_stage_key = "edit"
    model.model.conditioning_key = "hybrid"
    return model


def make_model(kind="sd1", tokens=8, context_dim=32, adm_dim=16, echo=False):
    """``echo=True`` uses ``ContextEchoUNet`` instead of a real ldm UNet."""
    unet = ContextEchoUNet(context_dim) if echo else tiny_unet(kind, context_dim=context_dim, adm_dim=adm_dim)
    return TinyLatentDiffusion(unet, kind=kind, context_dim=context_dim, tokens=tokens, adm_dim=adm_dim if kind == "sdxl" else None)
