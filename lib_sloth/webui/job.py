"""Everything Sloth keeps of one job: one `SlothJob` on the job's processing object, ``p.sloth_job``.

The Script's hooks (lib_sloth.webui.hooks) create it in `prepare_job` (``Script.process``, once per
job and once per X/Y/Z cell, whose ``p`` is a shallow copy: each cell gets its own job object) and
the adapters read the parts they need (`recorder`, the deferred first pass of A1111 1.7-1.9).
`job_of(p)` is the one way to reach it; a ``p`` Sloth never saw has an empty job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

ATTR = "sloth_job"


@dataclass
class SlothJob:
    settings: Any = None  # the job's SlothSettings; None = Sloth does nothing in this job
    notes: List[str] = field(default_factory=list)  # every note reported so far, each once, in order
    passes: List[Any] = field(default_factory=list)  # the attached pass objects (their notes grow while sampling)
    recorder: Any = None  # "Show Sloth maps": this pass's maps.MapRecorder, handed to the pass's patch
    maps: Optional[Tuple[str, Any]] = None  # (pass name, recorder) drawn after the job: its first batch's last pass
    defer_first_pass: bool = False  # A1111 1.7-1.9 txt2img: attach at the pass's first denoiser call
    deferred: Optional[Tuple[Any, int, Any]] = None  # (settings, seed, pending pass) waiting for that call


def job_of(p) -> SlothJob:
    """The job object of ``p`` (an empty one, not stored, when Sloth never saw this ``p``)."""
    job = getattr(p, ATTR, None)
    return job if isinstance(job, SlothJob) else SlothJob()


def new_job(p) -> SlothJob:
    """A fresh job object on ``p``, replacing any earlier one (a reused or copied ``p``)."""
    job = SlothJob()
    setattr(p, ATTR, job)
    return job
