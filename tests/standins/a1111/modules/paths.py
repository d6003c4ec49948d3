"""Stand-in for A1111 v1.10.1 ``modules/paths.py`` / ``paths_internal.py`` (written from the API).

``script_path`` is the stand-in root (the directory holding ``modules/`` and
``scripts/``), exactly as the real ``script_path`` is the WebUI root.
"""
import os
import tempfile

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("A1111_STANDIN_DATA", os.path.join(tempfile.gettempdir(), "a1111-standin-data"))
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
