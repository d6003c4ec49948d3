"""Stand-in for A1111 v1.10.1 ``modules/patches.py`` (written from the API, not the real code).

``patch(key, obj, field, replacement)`` swaps ``obj.field`` and remembers the
previous value under ``key``; patching the same ``(obj, field)`` twice with the
same key raises ``RuntimeError``.  ``undo`` restores (raising if nothing was
patched) and returns ``None``; ``original`` returns the remembered value or
``None``.  Behaviour is the same as the real helper.
"""
from collections import defaultdict

originals = defaultdict(dict)


def patch(key, obj, field, replacement):
    slot = (obj, field)
    if slot in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")
    previous = getattr(obj, field)
    originals[key][slot] = previous
    setattr(obj, field, replacement)
    return previous


def undo(key, obj, field):
    slot = (obj, field)
    if slot not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")
    setattr(obj, field, originals[key].pop(slot))
    return None


def original(key, obj, field):
    return originals[key].get((obj, field), None)
