"""Two methods defined outside the engine, each in this one module plus one `methods.Method` entry:
a sixth per-layer method (V Scale) and a second guidance method (Echo). Tests register them and
find them in every part of the extension with no other file edited.
"""
from dataclasses import dataclass

from lib_sloth import methods
from lib_sloth.attention import attend
from lib_sloth.fields import Validated, setting
from lib_sloth.guidance import Guidance, GuidedStep
from lib_sloth.layer_call import Plan


# ---- a per-layer method: every self-attention's values scaled ------------------------------------
@dataclass(frozen=True)
class VScaleSettings(Validated):
    enabled: bool = setting(False, hint="Scale the values of self-attention")
    scale: float = setting(1.0, 0.0, 2.0, hint="Multiplier of V; 1 = unchanged")

    @property
    def active(self) -> bool:
        return self.enabled and self.scale != 1


@dataclass(frozen=True)
class VScalePlan(Plan):
    scale: float

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(attend(layer.to_q(x), layer.to_k(k_in), layer.to_v(v_in) * self.scale, layer.heads,
                                   upcast))

    def keys_per_query(self, h, w):
        return float(h * w)


def plan_vscale(s: VScaleSettings, call):
    return VScalePlan(s.scale) if s.active else None


VSCALE = methods.Method("vscale", VScaleSettings, "V Scale", "VScale", "Sloth VScale", plan_vscale,
                        conflicts=(methods.Conflict(("tile",), "tiles need the plain values"),),
                        presets={"dim": {"vscale": {"enabled": True, "scale": 0.5}}})


# ---- a guidance method: away from an uncond pass whose middle self-attention is an identity -------
@dataclass(frozen=True)
class EchoSettings(Validated):
    enabled: bool = setting(False, hint="Guidance away from an uncond pass with identity middle attention")
    scale: float = setting(1.0, -2.0, 4.0, hint="Guidance strength; 0 = off")

    @property
    def active(self) -> bool:
        return self.enabled and self.scale != 0


@dataclass(frozen=True)
class IdentityPlan(Plan):
    """Each token attends only to itself: the layer returns to_out(to_v(v_in))."""

    def run(self, layer, x, k_in, v_in, upcast):
        return layer.to_out(layer.to_v(v_in))

    def keys_per_query(self, h, w):
        return 1.0


class EchoGuidance(Guidance):
    extra_rows = "uncond"

    def perturb_plan(self, module, info, x, call):
        return IdentityPlan() if info.block == "middle" else None

    def guide(self, cfg, step: GuidedStep):
        if step.uncond is None:
            return cfg
        perturbed = self.extra_call(step, step.x)
        return cfg + self.settings.scale * (step.uncond - perturbed)


ECHO = methods.Method("echo", EchoSettings, "Echo Guidance", "Echo", "Sloth Echo", guidance=EchoGuidance,
                      presets={"echo": {"echo": {"enabled": True, "scale": 1.0}}})
ECHO_ON = {"echo.enabled": True, "echo.scale": 1.0}
