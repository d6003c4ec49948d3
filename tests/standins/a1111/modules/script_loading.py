"""Stand-in for A1111 v1.10.1 ``modules/script_loading.py`` (written from the API, not the real code).

``load_module(path)`` executes a script file as a module whose ``__name__`` is the
file's *basename* (e.g. ``"xyz_grid.py"``) and which is **not** put into
``sys.modules`` -- exactly what v1.10.1 does.  Classes defined in a script
therefore have ``__module__ == "<basename>.py"``.
"""
import importlib.util
import os

loaded_scripts = {}


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module
