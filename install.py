# Run by the WebUI (as `python install.py`) when the extension is installed or the WebUI starts.
#
# Sloth needs torch, einops and gradio, which every supported WebUI (AUTOMATIC1111 1.7-1.10,
# Forge, reForge) already ships, so there is nothing to install. Installing anything here could
# replace the WebUI's own pinned versions; should a dependency ever be needed, install it pinned
# through `launch.run_pip` and only when `launch.is_installed` says it is missing.
