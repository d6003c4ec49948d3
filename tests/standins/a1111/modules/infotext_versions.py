"""Stand-in for A1111 v1.10.1 ``modules/infotext_versions.py`` (written from the API, not the real code).

``parse_version`` keeps only ``"<a>-<b>"`` of a ``"<a>-<b>-<c>"`` version string;
``backcompat(d)`` adds the same compatibility keys as the real function for
infotexts written by older WebUI versions (only when ``opts.auto_backcompat``).
"""
import re

from packaging import version

from modules import shared

v160 = version.parse("1.6.0")
v170_tsnr = version.parse("v1.7.0-225")
v180 = version.parse("1.8.0")
v180_hr_styles = version.parse("1.8.0-139")


def parse_version(text):
    if text is None:
        return None
    m = re.match(r'([^-]+-[^-]+)-.*', text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except Exception:
        return None


def backcompat(d):
    if not shared.opts.auto_backcompat:
        return
    ver = parse_version(d.get("Version"))
    if ver is None:
        return
    if ver < v160 and '[' in d.get('Prompt', ''):
        d["Old prompt editing timelines"] = True
    if ver < v160 and d.get('Sampler', '') in ('DDIM', 'PLMS'):
        d["Pad conds v0"] = True
    if ver < v170_tsnr:
        d["Downcast alphas_cumprod"] = True
    if ver < v180 and d.get('Refiner'):
        d["Refiner switch by sampling steps"] = True
