"""Stand-in for A1111 v1.10.1 ``modules/extensions.py`` (written from the API, not the real code).

Only what ``script_callbacks``/``scripts`` need: an ``Extension`` record
(``name``, ``canonical_name``, ``path``, ``is_builtin``, ``enabled``, ``metadata``),
the ``extensions`` list, ``active()`` and ``find_extension(filename)``.
Tests register the extension under test with ``register(name, path)`` so that
callback names come out as ``"<ext>/<file>/<category>"`` as in the real WebUI.
Simplified: no git information, no ``metadata.ini`` parsing (so no
``Before``/``After``/``Requires`` ordering).
"""
import os


class _Metadata:
    def __init__(self):
        self.canonical_name = None

    def list_callback_order_instructions(self):
        return []

    def get_script_requirements(self, field, section, extra_section=None):
        return []


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name = name
        self.canonical_name = name.lower()
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.metadata = _Metadata()
        self.metadata.canonical_name = self.canonical_name


extensions = []


def active():
    return [x for x in extensions if x.enabled]


def register(name, path, is_builtin=False):
    ext = Extension(name, os.path.abspath(path), is_builtin=is_builtin)
    extensions[:] = [x for x in extensions if x.canonical_name != ext.canonical_name]
    extensions.append(ext)
    return ext


def find_extension(filename):
    for ext in extensions:
        if os.path.abspath(filename).startswith(ext.path + os.sep):
            return ext
    return None
