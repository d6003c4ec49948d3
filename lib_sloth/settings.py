"""Settings for every method: defaults, ranges, validation and presets in one table.

Each setting is a dataclass field whose metadata holds its range or choices and a one-line
hint. The UI, the API, the info text and X/Y/Z all read this table (see `iter_fields`), so a
range is written down exactly once. Settings objects are frozen: a pass never sees them change.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

POOL_MODES = ("1D_AVG", "1D_MAX", "2D_AVG", "2D_MAX")
AGENT_MAX_DOWNSAMPLE = (1, 2, 4, 8)


class SettingsError(ValueError):
    """A setting is unknown or outside its allowed range; the message starts with the field's path."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}{detail}")

    def under(self, prefix: str) -> "SettingsError":
        """The same error seen from an enclosing settings block."""
        return SettingsError(prefix + self.field, self.detail)


class _Validated:
    def __post_init__(self):
        _validate(self)


def setting(default, lo=None, hi=None, *, choices=None, hint="", integer=False):
    meta = {"lo": lo, "hi": hi, "choices": choices, "hint": hint, "integer": integer}
    return field(default=default, metadata=meta)


def nested(factory, hint=""):
    return field(default_factory=factory, metadata={"hint": hint, "nested": True})


# ---------------------------------------------------------------------------------------------
# Slothful pooling of K/V, shared by Slothful Attention and Near-sighted Attention
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolBlock(_Validated):
    """How one group of UNet blocks (input or output) reduces its self-attention K/V tokens."""

    mode: str = setting("2D_AVG", choices=POOL_MODES,
                        hint="2D pools square-ish windows of the image; 1D pools runs of the token row order")
    slothful: float = setting(6.0, 0.0, 50.0,
                              hint="Higher = fewer K/V tokens: faster, softer; 1 or less = off; try 4-8")
    depth_decay: float = setting(2.0, 0.0, 4.0,
                                 hint="How fast the strength falls with depth: each level divides it by 2^decay")
    k_blend: float = setting(0.0, 0.0, 1.0,
                             hint="Keys: 0 = pick one token per window, 1 = pooled window; higher can reduce noise")
    v_blend: float = setting(0.0, 0.0, 1.0,
                             hint="Values: 0 = pick one token per window, 1 = pooled window; AVG softens, MAX hardens")


def _output_block() -> PoolBlock:
    return PoolBlock(slothful=4.0)


@dataclass(frozen=True)
class SlothfulSettings(_Validated):
    enabled: bool = setting(False, hint="Reduce the keys/values of self-attention by pooling")
    peak_time: float = setting(0.4, 0.0, 1.0,
                               hint="Point of the schedule (0 = first step, 1 = last) where the effect is strongest")
    time_decay: float = setting(2.0, 0.0, 4.0,
                                hint="How fast the effect fades away from the peak; 0 = same strength at every step")
    keep_middle: bool = setting(True, hint="Leave the middle block untouched")
    input: PoolBlock = nested(PoolBlock, "Input (down) blocks")
    output: PoolBlock = nested(_output_block, "Output (up) blocks")


# ---------------------------------------------------------------------------------------------
# Near-sighted Tile and Near-sighted Attention
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileSettings(_Validated):
    enabled: bool = setting(False, hint="Local tiles of attention plus a global view of the whole image")
    tile_size: int = setting(32, 16, 64, integer=True,
                             hint="Tile side in latent cells (64 = 512 px on SD1.5); smaller = finer detail, less coherence")
    global_ratio: float = setting(0.5, 0.0, 1.0,
                                  hint="Share of the whole image each tile also sees; higher = more coherent, 0 = purely local")
    max_depth: int = setting(2, 1, 3, integer=True,
                             hint="How many of the shallowest attention levels are tiled")


@dataclass(frozen=True)
class NearSightedSettings(_Validated):
    enabled: bool = setting(False, hint="Tiles plus Slothful pooling inside each tile: the fastest rewrite")
    max_depth: int = setting(2, 1, 3, integer=True,
                             hint="How many of the shallowest attention levels are tiled; deeper ones get plain Slothful")
    peak_time: float = setting(0.4, 0.0, 1.0, hint="Point of the schedule where pooling is strongest and tiles reach their peak")
    time_decay: float = setting(2.0, 0.0, 4.0, hint="How fast the effect moves back to base away from the peak")
    keep_middle: bool = setting(True, hint="No pooling in the middle block")
    base_tile_size: int = setting(24, 16, 64, integer=True, hint="Tile side far from the peak, in latent cells")
    peak_tile_size: int = setting(32, 16, 64, integer=True, hint="Tile side at the peak, in latent cells")
    base_global_ratio: float = setting(0.2, 0.0, 1.0, hint="Global view far from the peak")
    peak_global_ratio: float = setting(0.8, 0.0, 1.0, hint="Global view at the peak; higher keeps the image coherent")
    input: PoolBlock = nested(PoolBlock, "Input (down) blocks")
    output: PoolBlock = nested(_output_block, "Output (up) blocks")


# ---------------------------------------------------------------------------------------------
# AgentSD
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentPhase:
    """ToMe + agent settings for one part of the schedule."""

    sx: int = setting(4, 1, 8, integer=True, hint="Merge cell width in tokens")
    sy: int = setting(4, 1, 8, integer=True, hint="Merge cell height in tokens")
    ratio: float = setting(0.4, 0.0, 0.9375,
                           hint="Share of tokens merged away before attention; 0 = off for this phase")
    agent_ratio: float = setting(0.95, 0.0, 1.0,
                                 hint="Share merged away to make the agent tokens; agents only when far fewer than tokens")

    def __post_init__(self):
        _validate(self)
        cap = 1.0 - 1.0 / (self.sx * self.sy)
        if self.ratio > cap + 1e-9:
            raise SettingsError("ratio", f"={self.ratio} is out of range for sx={self.sx}, sy={self.sy}: "
                                f"at most 1 - 1/(sx*sy) = {cap:.4f} of the tokens can be merged")


def _late_phase() -> AgentPhase:
    return AgentPhase(sx=2, sy=2, ratio=0.4, agent_ratio=0.5)


@dataclass(frozen=True)
class AgentSDSettings(_Validated):
    enabled: bool = setting(False, hint="Token merging with agent attention: faster, lower memory")
    max_downsample: int = setting(1, choices=AGENT_MAX_DOWNSAMPLE, integer=True,
                                  hint="Merge in levels down to this downsample, counted from the shallowest attention level")
    switch_at: float = setting(0.4, 0.0, 1.0,
                               hint="Share of the steps that use the early settings; the rest use the late ones")
    use_rand: bool = setting(True, hint="Random destination per merge cell (seeded); off = always the first cell")
    k_scale2: float = setting(0.3, 0.0, 1.0, hint="Temperature of the query-to-agent softmax")
    k_shortcut: float = setting(0.075, 0.0, 1.0, hint="How much of the plain values is added back")
    fp32: bool = setting(False, hint="Compute the agent similarities in fp32 (needed for SD2.x in fp16)")
    early: AgentPhase = nested(AgentPhase, "Early steps")
    late: AgentPhase = nested(_late_phase, "Late steps")


# ---------------------------------------------------------------------------------------------
# Self-Attention Guidance
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SagSettings(_Validated):
    enabled: bool = setting(False, hint="Self-Attention Guidance: one more UNet pass per step (+~50 % time)")
    scale: float = setting(0.5, -2.0, 5.0, hint="Guidance strength; 0 = off; the effect saturates around 1.5")
    blur_sigma: float = setting(2.0, 0.0, 10.0, hint="Blur of the attended regions in latent cells; 0 = no blur")
    threshold: float = setting(1.0, 0.0, 4.0,
                               hint="Tokens receiving more attention than this are blurred; lower = larger blurred area")


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlothSettings:
    slothful: SlothfulSettings = nested(SlothfulSettings, "Slothful Attention")
    tile: TileSettings = nested(TileSettings, "Near-sighted Tile")
    nearsighted: NearSightedSettings = nested(NearSightedSettings, "Near-sighted Attention")
    agentsd: AgentSDSettings = nested(AgentSDSettings, "AgentSD")
    sag: SagSettings = nested(SagSettings, "Self-Attention Guidance")
    upcast_attention: bool = setting(False, hint="Compute rewritten attention in fp32 (slower, avoids fp16 overflow)")

    def __post_init__(self):
        _validate(self)
        rewrites = [n for n in ("slothful", "tile", "nearsighted") if getattr(self, n).enabled]
        if len(rewrites) > 1:
            raise SettingsError(f"{rewrites[1]}.enabled", f": {' and '.join(rewrites)} are enabled together, but they "
                                "rewrite the same self-attention layers in different ways; enable only one "
                                "of slothful, tile, nearsighted")
        if self.agentsd.enabled and (self.tile.enabled or self.nearsighted.enabled):
            other = "tile" if self.tile.enabled else "nearsighted"
            raise SettingsError("agentsd.enabled", f": agentsd and {other} are enabled together, but both start at "
                                "the shallowest attention level and tiling needs the token grid that merging "
                                "removes; enable only one of them")

    @property
    def active(self) -> bool:
        """Whether any method would change the UNet's output."""
        from . import methods  # local import: methods depend on settings

        return methods.any_active(self)


def _validate(obj) -> None:
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if meta.get("nested"):
            continue
        value = getattr(obj, f.name)
        bad = _check_value(value, isinstance(f.default, bool), meta)
        if bad:
            raise SettingsError(f.name, f"={value!r} {bad}")


def _check_value(value, is_bool: bool, meta: Mapping[str, Any]) -> str:
    """'' when `value` fits, else why not (with the allowed range)."""
    if is_bool:
        return "" if isinstance(value, bool) else "is not allowed: expected true or false"
    if meta.get("choices") is not None:
        ok = value in meta["choices"] and not isinstance(value, bool)
        return "" if ok else f"is not allowed: choose one of {list(meta['choices'])}"
    allowed = f"[{meta['lo']}, {meta['hi']}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"is not allowed: expected a number in {allowed}"
    if meta.get("integer") and value != int(value):
        return f"is not allowed: expected a whole number in {allowed}"
    if not meta["lo"] <= value <= meta["hi"]:
        return f"is out of range: allowed {allowed}"
    return ""


# ---------------------------------------------------------------------------------------------
# Building from plain data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """One leaf setting as the UI / API / info text see it."""

    path: str  # dotted, e.g. "slothful.input.k_blend"
    default: Any
    lo: Any
    hi: Any
    choices: tuple | None
    integer: bool
    hint: str

    @property
    def kind(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if self.choices is not None:
            return "choice"
        return "int" if self.integer else "float"


def iter_fields(cls=SlothSettings, prefix: str = "") -> Iterator[FieldSpec]:
    """Every leaf setting of `cls` with its dotted path, in declaration order."""
    return iter(_field_table(cls, prefix))


@functools.lru_cache(maxsize=None)
def _field_table(cls, prefix: str) -> tuple:
    # The table is a pure function of the class: build it once (the UI and API read it often).
    return tuple(_walk_fields(cls, prefix))


def _walk_fields(cls, prefix: str) -> Iterator[FieldSpec]:
    defaults = cls()
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if f.metadata.get("nested"):
            sub_default = getattr(defaults, f.name)
            for spec in _walk_fields(type(sub_default), path + "."):
                # a nested block may have its own defaults (output slothful 4): read the instance
                value = _get_path(sub_default, spec.path[len(path) + 1:])
                yield dataclasses.replace(spec, default=value)
        else:
            m = f.metadata
            yield FieldSpec(path, getattr(defaults, f.name), m.get("lo"), m.get("hi"),
                            m.get("choices"), bool(m.get("integer")), m.get("hint", ""))


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def get_value(settings: SlothSettings, path: str):
    return _get_path(settings, path)


def _coerce(spec: FieldSpec, value):
    """Accept what UIs and JSON hand over (ints for floats, 'true', '0.5') without hiding errors."""
    name = spec.path
    if spec.kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if spec.kind == "choice":
        if spec.integer and isinstance(value, (str, float)):
            try:
                as_float = float(value)
            except ValueError:
                raise SettingsError(name, f"={value!r} is not allowed: choose one of {list(spec.choices)}")
            return int(as_float) if as_float == int(as_float) else as_float
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(name, f"={value!r} is not allowed: expected a number in [{spec.lo}, {spec.hi}]")
    if spec.integer and isinstance(value, float) and value == int(value):
        value = int(value)
    if not spec.integer and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def settings_from_dict(data: Mapping[str, Any] | None, base: SlothSettings | None = None) -> SlothSettings:
    """Build validated settings from nested dicts and/or dotted keys, over `base` (defaults).

    Unknown keys and bad values raise `SettingsError` naming the field and its allowed range.
    """
    flat = flatten(data or {})
    specs = {s.path: s for s in iter_fields()}
    unknown = sorted(set(flat) - set(specs))
    if unknown:
        raise SettingsError(repr(unknown[0]), f" is not a setting; known settings: {', '.join(specs)}")
    values = to_flat(base or SlothSettings())
    for path, value in flat.items():
        values[path] = _coerce(specs[path], value)
    return _build(SlothSettings, values, "")


@functools.lru_cache(maxsize=None)
def _nested_type(cls, name: str):
    return type(getattr(cls(), name))


def _build(cls, values: Mapping[str, Any], prefix: str):
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if f.metadata.get("nested"):
            kwargs[f.name] = _build(_nested_type(cls, f.name), values, path + ".")
        else:
            kwargs[f.name] = values[path]
    try:
        return cls(**kwargs)
    except SettingsError as err:  # the nested block's own check: say where it sits
        raise err.under(prefix) from None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = prefix + str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def to_flat(settings) -> dict[str, Any]:
    """Dotted path -> value for every leaf setting."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("nested"):
            out.update({f"{f.name}.{k}": v for k, v in to_flat(value).items()})
        else:
            out[f.name] = value
    return out


def to_dict(settings) -> dict[str, Any]:
    """Nested plain dict (JSON-ready)."""
    return dataclasses.asdict(settings)


# ---------------------------------------------------------------------------------------------
# Presets: starting points, not magic. Each is a partial dict over the defaults.
# ---------------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    "off": {},
    # Tiles with a wide global view sharpen small structures while keeping the layout.
    "detail": {"tile": {"enabled": True, "tile_size": 32, "global_ratio": 0.5}},
    # Near-sighted Attention at its defaults is the fastest of the three rewrites.
    "speed": {"nearsighted": {"enabled": True}},
    # The original node's defaults: softer, calmer images.
    "slothful": {"slothful": {"enabled": True}},
    # Pooled keys in the input blocks reduce noise and fine clutter.
    "soft": {"slothful": {"enabled": True, "input": {"k_blend": 0.4}, "output": {"v_blend": 0.3}}},
    # The AgentSD authors' two-phase schedule.
    "agentsd": {"agentsd": {"enabled": True}},
    # SAG at its usual strength: cleaner backgrounds for one more UNet pass per step.
    "background fix": {"sag": {"enabled": True, "scale": 0.5, "blur_sigma": 2.0}},
}


def preset(name: str) -> SlothSettings:
    if name not in PRESETS:
        raise SettingsError("preset", f"={name!r} is not a preset; choose one of {list(PRESETS)}")
    return settings_from_dict(PRESETS[name])
