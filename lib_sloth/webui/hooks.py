"""What the Script's hooks do, kept out of the Script so they read in one place.

Per job, `prepare_job` (from ``Script.process``) turns the args into settings, writes the info
text and keeps the settings on the job object (``p.sloth_job``, lib_sloth.webui.job; settings None
= do nothing). Per sampling pass, `attach_pass` hands them to the backend and keeps the pass it
returns. All state lives on that one object on ``p``, which X/Y/Z copies per cell (a shallow copy;
`prepare_job` gives each cell its own job object): dicts that may be shared with the original
``p`` (``extra_generation_params``, ``comments``) are copied on write, never changed in place, so
nothing leaks from one cell to the next; a job without Sloth leaves them alone.

"Show Sloth maps" (``show_maps``): `attach_pass` puts a `MapRecorder` on the job (`recorder`)
for each pass of the job's first batch (the adapters hand it to the pass's SlothPatch; a later
pass, e.g. the hires pass, replaces an earlier one) and `append_maps` (from ``Script.postprocess``)
draws it over the first image and appends the maps to ``processed.images``, after the generated
images, the way ControlNet appends its detected maps. With the switch off none of this runs.
"""
from __future__ import annotations

import sys
import traceback

from .. import infotext, user_presets, values
from ..fields import SettingsError
from ..maps import MapRecorder
from . import args as script_args
from .backend import NothingPatched
from .job import job_of, new_job

OUR_KEYS = (*infotext.all_keys(), infotext.NOTES_KEY, infotext.ERROR_KEY)


def prepare_job(p, args, presets_path: str) -> script_args.Request | None:
    """Resolve this job's settings; on a bad name or value, report it and patch nothing."""
    job = new_job(p)
    params = getattr(p, "extra_generation_params", None)
    if params is None or any(k in OUR_KEYS for k in params):  # stale keys, e.g. from a reused p
        p.extra_generation_params = {k: v for k, v in (params or {}).items() if k not in OUR_KEYS}
    try:
        request = script_args.resolve(args, p, user_presets=lambda: user_presets.load(presets_path)[0])
    except SettingsError as err:
        report_error(p, err)
        return None
    except Exception as err:  # a bug of ours must still say plainly that Sloth did not run
        traceback.print_exc()
        report_error(p, f"Sloth could not read its settings ({type(err).__name__}: {values.shorten(str(err), 80)})")
        return None
    if request.enabled:
        job.settings = request.settings
        if request.settings.active:  # "off" or no method ticked: the image is plain, and so is its info text
            write_params(p, infotext.to_params(request.settings))
    return request


def write_params(p, entries: dict) -> None:
    """Add info-text entries without changing a dict the original p (or other cells) may share."""
    p.extra_generation_params = {**p.extra_generation_params, **entries}


def report_error(p, err: Exception) -> None:
    """Say plainly what was wrong, in the console, the info text and the UI's comments."""
    text = str(err)
    message = f"{text}{'' if text.endswith(('.', '?', '!')) else '.'} Nothing was patched for this job."
    print(f"[Sloth] Error: {message}", file=sys.stderr)
    write_params(p, {infotext.ERROR_KEY: message})
    if isinstance(getattr(p, "comments", None), dict):
        p.comments = {**p.comments, f"Sloth error: {message}": 1}


def attach_pass(p, backend) -> list[str]:
    """Patch this sampling pass (if the job has active settings); returns the pass's notes so far."""
    job = job_of(p)
    settings = job.settings
    if settings is None or not settings.active:
        return []
    _prepare_maps(p, job)
    try:
        sloth_pass = backend.attach(p, settings, batch_seed(p))
        if sloth_pass.nothing_patched:
            drop_method_keys(p)
    except Exception as err:  # the WebUI would only log it; say what it means for the image
        traceback.print_exc()
        sloth_pass = NothingPatched([f"Sloth could not attach to this sampling pass ({type(err).__name__}: "
                                     f"{err}); it ran without Sloth"])
    # The pass's notes keep growing while it samples (skipped layers, SAG skips): keep the pass
    # and read them again after sampling (refresh_notes).
    job.passes.append(sloth_pass)
    notes = [str(n) for n in sloth_pass.notes]
    record_notes(p, notes)
    return notes


def drop_method_keys(p) -> None:
    """This pass patched nothing: the info text keeps only the notes, no settings that did not run."""
    params = getattr(p, "extra_generation_params", None) or {}
    keys = set(infotext.all_keys())
    if any(k in keys for k in params):
        p.extra_generation_params = {k: v for k, v in params.items() if k not in keys}


def refresh_notes(p) -> None:
    """After a batch has sampled: report what the passes noted while sampling."""
    passes = job_of(p).passes
    if passes:
        record_notes(p, [str(n) for sloth_pass in passes for n in sloth_pass.notes])


def batch_seed(p) -> int:
    """The first seed of the batch being sampled (``p.seeds`` is set per batch)."""
    for seeds in (getattr(p, "seeds", None), getattr(p, "all_seeds", None)):
        if seeds:
            return int(seeds[0])
    return int(getattr(p, "seed", 0) or 0)


def record_notes(p, notes: list[str]) -> None:
    """Print each new note once per job and list them all in the info text."""
    seen = job_of(p).notes
    for note in notes:
        if note not in seen:
            seen.append(note)
            print(f"[Sloth] {note}", file=sys.stderr)
    if seen:
        write_params(p, {infotext.NOTES_KEY: "; ".join(seen)})


# ---- Show Sloth maps ----------------------------------------------------------------------------
def pass_name(p) -> str:
    """Which sampling pass of the job this is, as the maps' captions name it."""
    if getattr(p, "is_hr_pass", False):
        return "hires pass"
    if "Img2Img" in type(p).__name__:
        return "img2img"
    return "txt2img first pass" if getattr(p, "enable_hr", False) else "txt2img"


def _prepare_maps(p, job) -> None:
    """A recorder for this pass when the job shows maps and this is its first batch; else none."""
    job.recorder = None
    if not getattr(job.settings, "show_maps", False) or (getattr(p, "iteration", 0) or 0) != 0:
        return
    job.recorder = MapRecorder(job.settings, batch_seed(p))
    job.maps = (pass_name(p), job.recorder)  # the last pass of the first batch is the one shown


def append_maps(p, processed) -> list:
    """Draw the recorded maps over the job's first image and append them to processed.images.

    Returns the draw_maps.MapImage list (empty when maps are off or nothing was recorded). A
    drawing failure is reported and leaves the generated images as they are.
    """
    job = job_of(p)
    maps, job.maps, job.recorder = job.maps, None, None
    images = getattr(processed, "images", None)
    first = getattr(processed, "index_of_first_image", 0) or 0
    if not maps or not isinstance(images, list) or len(images) <= first:
        return []
    from .. import draw_maps  # PIL, only when maps are drawn

    name, recorder = maps
    label = draw_maps.pass_label(name, int(getattr(p, "batch_size", 1) or 1), int(getattr(p, "n_iter", 1) or 1))
    try:
        drawn = draw_maps.render(recorder, images[first], label)
    except Exception as err:
        traceback.print_exc()
        print(f"[Sloth] Could not draw the maps ({type(err).__name__}: {err}); the images are unchanged",
              file=sys.stderr)
        return []
    images.extend(m.image for m in drawn)
    return drawn
