"""Stand-in of Forge main's ``backend`` package (lllyasviel/stable-diffusion-webui-forge, branch main,
commit dfdcbab6, 2025-06-26) for the tests. See ../README.md for what each module mirrors and
which parts are the real ComfyUI 0.3.75 code underneath."""
