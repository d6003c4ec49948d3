"""Sloth: the extension's one always-on Script. It only wires WebUI hooks to lib_sloth.

The WebUI runs every .py file in scripts/ with the extension folder on sys.path, which is what
makes ``lib_sloth`` importable here. API name: "sloth" (the title, lower-cased).
"""
import os

from modules import script_callbacks, scripts

from lib_sloth import infotext
from lib_sloth.webui import backend as sloth_backend
from lib_sloth.webui import hooks, ui, xyz
from lib_sloth.webui.job import job_of

EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_PRESETS_PATH = os.path.join(EXTENSION_ROOT, "user_presets.json")


class Script(scripts.Script):
    presets_path = USER_PRESETS_PATH

    def __init__(self):
        super().__init__()
        self.backend = None  # detected on first use; tests may set their own

    def _backend(self):
        if self.backend is None:
            self.backend = sloth_backend.detect()
        return self.backend

    def title(self):
        return "Sloth"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        built = ui.build(elem_id=self.elem_id, presets_path=self.presets_path,
                         backend_note=self._backend().ui_note)
        self.infotext_fields = built.infotext_fields
        self.paste_field_names = built.paste_field_names
        return built.controls

    def process(self, p, *args):
        hooks.prepare_job(p, args, self.presets_path)

    # A1111 1.10+ and Forge: called before every sampling pass (first, hires, img2img).
    def process_before_every_sampling(self, p, *args, **kwargs):
        hooks.attach_pass(p, self._backend())

    # A1111 1.7-1.9 have no process_before_every_sampling: first pass / img2img and hires pass.
    def process_batch(self, p, *args, **kwargs):
        if not _has_every_sampling_hook():
            _defer_txt2img(p)
            hooks.attach_pass(p, self._backend())

    # After sampling, before the batch's images get their info text: notes made while sampling.
    def postprocess_batch(self, p, *args, **kwargs):
        hooks.refresh_notes(p)

    # After the job: "Show Sloth maps" appends its images after the generated ones.
    def postprocess(self, p, processed, *args):
        hooks.append_maps(p, processed)

    def before_hr(self, p, *args):
        if not _has_every_sampling_hook():
            # sample_hr_pass creates the hires sampler before calling before_hr: attach now, no deferral
            job = job_of(p)
            job.defer_first_pass, job.deferred = False, None
            hooks.attach_pass(p, self._backend())


def _defer_txt2img(p) -> None:
    # txt2img creates each pass's sampler inside sample(), after these hooks: p.sampler is missing
    # or the previous pass's, so the adapter attaches at the pass's first denoiser call instead
    job_of(p).defer_first_pass = "Img2Img" not in type(p).__name__


def _has_every_sampling_hook() -> bool:
    return "process_before_every_sampling" in vars(scripts.Script)


def _migrate_pasted(infotext_text, params):  # UI pastes only (the API's infotext field skips it)
    infotext.migrate(params)
    infotext.mark_ui_paste(params)


def _presets_path():
    return Script.presets_path


# Module scope, like the WebUI expects: load_scripts clears callbacks before re-running this file,
# and register() skips axes that are already present, so a reload never adds them twice.
# X/Y/Z axes now (API-only starts build the xyz UI before any before_ui callback runs) and
# again at before_ui (a fork that loads xyz_grid after us); see lib_sloth/webui/xyz.py.
xyz.register_if_loaded(_presets_path)
script_callbacks.on_before_ui(xyz.before_ui_callback(_presets_path))
script_callbacks.on_infotext_pasted(_migrate_pasted)


def _attach_deferred(params):  # A1111 1.7-1.9 txt2img first pass: its sampler exists only now
    from lib_sloth.webui import a1111

    a1111.attach_deferred(getattr(params, "denoiser", None))


script_callbacks.on_cfg_denoiser(_attach_deferred)
