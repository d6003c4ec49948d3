"""Test stand-in for the parts of crowsonkb/k-diffusion (commit ab527a9a, the one
A1111 v1.10.1 pins) that the WebUI's k-diffusion sampler path uses.  Written from
the public API, not the real code.  The real package cannot be installed next to
the CPU torch of this test environment, so this one is put on ``sys.path`` with
the WebUI stand-in.  Submodules: ``utils`` (``append_dims``), ``external``
(``DiscreteSchedule``, ``CompVisDenoiser``, ``CompVisVDenoiser``), ``sampling``
(``sample_dpmpp_2m``, ``sample_euler``, ``sample_euler_ancestral``, ``sample_heun``, ``get_sigmas_karras``,
``get_sigmas_exponential``, ``to_d``, ``append_zero``).
"""
from . import utils, external, sampling  # noqa: F401
