"""Stand-in for Forge's ``modules_forge`` package (lllyasviel/stable-diffusion-webui-forge, tag
``previous``): only the glue that an attention extension calls, re-written for the tests on top of
the real ComfyUI code that ``ldm_patched`` is aliased to. See ``tests/forge_harness.py``."""
