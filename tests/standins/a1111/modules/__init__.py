"""Test stand-in for the ``modules`` package of AUTOMATIC1111 stable-diffusion-webui v1.10.1.

Every module in this package is a stand-in written from the WebUI's public API
(as read at tag v1.10.1, commit 82a973c04367123ae98bd9abdf80d9eda9b910e2);
none of it is the WebUI's code.  See ../README.md for what each file mirrors and
what is simplified.
"""

# In the running WebUI ``modules.infotext_utils`` is imported during start-up, long
# before any extension script, and registers the old module name
# ``modules.generation_parameters_copypaste``.  Importing it here gives the same
# "already started" state to any import order a test may use.
from modules import infotext_utils as _infotext_utils  # noqa: E402,F401
