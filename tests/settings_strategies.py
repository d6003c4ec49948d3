"""Hypothesis strategies for valid SlothSettings (shared by the info-text and UI tests)."""
from hypothesis import strategies as st

from lib_sloth.settings import SlothSettings, iter_fields, settings_from_dict

REWRITES = ("slothful.enabled", "tile.enabled", "nearsighted.enabled")


def _leaf(spec):
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "choice":
        return st.sampled_from(spec.choices)
    if spec.integer:
        return st.integers(spec.lo, spec.hi)
    return st.floats(spec.lo, spec.hi, allow_nan=False, allow_infinity=False)


@st.composite
def settings_values(draw) -> dict:
    """Dotted path -> value for settings the table accepts (one rewrite at most, capped merge ratios)."""
    flat = {spec.path: draw(_leaf(spec)) for spec in iter_fields()}
    rewrite = draw(st.sampled_from((None, *REWRITES)))
    for path in REWRITES:
        flat[path] = path == rewrite
    if rewrite in ("tile.enabled", "nearsighted.enabled"):
        flat["agentsd.enabled"] = False
    for phase in ("early", "late"):
        cap = 1.0 - 1.0 / (flat[f"agentsd.{phase}.sx"] * flat[f"agentsd.{phase}.sy"])
        flat[f"agentsd.{phase}.ratio"] = min(flat[f"agentsd.{phase}.ratio"], cap)
    return flat


def random_settings() -> st.SearchStrategy[SlothSettings]:
    return settings_values().map(settings_from_dict)


def pasted_subset(settings: SlothSettings) -> dict:
    """What pasting the info text of `settings` sets: the global settings, every method's enable and
    every setting of the enabled methods (a disabled method's other controls are left alone)."""
    from lib_sloth.settings import to_flat

    flat = to_flat(settings)
    enabled = {p.split(".")[0] for p in flat if p.count(".") == 1 and p.endswith(".enabled") and flat[p]}
    return {p: v for p, v in flat.items()
            if "." not in p or (p.count(".") == 1 and p.endswith(".enabled")) or p.split(".")[0] in enabled}
