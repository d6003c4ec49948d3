"""Stand-in for A1111 v1.10.1 ``modules/shared_state.py`` (written from the API, not the real code).

``State`` carries the same counters the real one exposes to extensions:
``sampling_step`` (set by ``Sampler.callback_state`` after each sampler step),
``sampling_steps`` (set by ``Sampler.launch_sampling``), ``job``, ``job_no``,
``job_count``, ``interrupted``, ``skipped``, ``stopping_generation``,
``current_latent``... plus ``begin``/``end``/``nextjob``/``interrupt``/``skip``.

Simplified: no live-preview image decoding, no server-command signalling.
"""
import datetime
import time


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    job_timestamp = '0'
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    current_image_sampling_step = 0
    id_live_preview = 0
    textinfo = None
    time_start = None
    server_start = None

    def __init__(self):
        self.server_start = time.time()

    def skip(self):
        self.skipped = True

    def interrupt(self):
        self.interrupted = True

    def stop_generating(self):
        self.stopping_generation = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def dict(self):
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def begin(self, job: str = "(unknown)"):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self):
        self.job = ""
        self.job_count = 0

    def set_current_image(self):
        pass

    def do_set_current_image(self):
        pass

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1
