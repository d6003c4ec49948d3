"""Settings <-> the info-text parameters written under every image, and back on paste.

Format v1 (one line in the WebUI's "Steps: 20, Sampler: ..." list)::

    Sloth: v1 upcast_attention=0, Sloth Tile: tile_size=32 global_ratio=0.5 max_depth=2

* ``Sloth`` is written whenever the extension is enabled. Its value starts with the format
  version (``v1``), then the settings that belong to no method.
* One key per *enabled* method (its ``infotext_key`` in lib_sloth.methods). Its value lists every setting of that method
  as ``token=value`` separated by spaces, in the settings table's order. A token is the
  setting's path inside the method with ``input.``/``output.`` shortened to ``in_``/``out_``
  and other dots turned into ``_`` (``input.k_blend`` -> ``in_k_blend``, ``early.sx`` ->
  ``early_sx``). Booleans are ``1``/``0``; numbers are the shortest decimal that reads back
  exactly. Values hold no ``,``, ``:`` or newline, so the WebUI never quotes them.
* A switch in ``FLAG_KEYS`` (``show_maps``) is a key of its own, written (as ``on``) only
  when it is on, so a job without it has the info text it always had.
* Keys match the WebUI's parser (``\\w[\\w \\-/]+``: word characters, spaces, ``-``, ``/``).

Reading back: no ``Sloth`` key means the extension is off; a method key that is absent means
that method is off (its other controls are left as they are); unknown tokens and bad values
(read by `lib_sloth.values`, like every other entry point) are skipped and listed by `problems`:
a UI paste shows them in the status line, the API's ``infotext`` field fails the job with them
(see `PasteKey`). A paste itself never fails. Older formats are upgraded first by
`migrate`, which the WebUI's info-text-pasted callback and every reader call (the API's
``infotext`` field skips that callback).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from . import methods, values
from .fields import FieldSpec, SettingsError
from .settings import SlothSettings, iter_fields, to_flat

FORMAT_VERSION = 1
MAIN_KEY = "Sloth"
NOTES_KEY = "Sloth notes"  # what the backend skipped or changed; written, never read back
ERROR_KEY = "Sloth error"  # why nothing was patched for this job; written, never read back
# Shared switches that get a key of their own, present only when on; part of the v1 format.
FLAG_KEYS = {"show_maps": "Sloth maps"}

# The WebUI's key pattern (modules/infotext_utils.py re_param), for checking our keys.
KEY_PATTERN = re.compile(r"\w[\w \-/]+")
_BLOCK_ABBREVIATIONS = {"input": "in", "output": "out"}
_VERSION_TOKEN = re.compile(r"v(\d+)$")


# ---------------------------------------------------------------------------------------------
# Where each setting goes
# ---------------------------------------------------------------------------------------------
def method_of(path: str) -> str | None:
    """The method block a setting belongs to ("slothful" for "slothful.input.k_blend"), or None."""
    head, dot, _ = path.partition(".")
    return head if dot else None


def key_for(path: str) -> str:
    """The info-text key that carries this setting."""
    if path in FLAG_KEYS:
        return FLAG_KEYS[path]
    method = method_of(path)
    if method is None:
        return MAIN_KEY
    return methods.get(method).infotext_key


def token_for(path: str) -> str:
    """The setting's name inside its key's value ("slothful.input.k_blend" -> "in_k_blend")."""
    parts = path.split(".")
    if method_of(path) is not None:
        parts = parts[1:]
    return "_".join([_BLOCK_ABBREVIATIONS.get(p, p) for p in parts[:-1]] + [parts[-1]])


def all_keys() -> list[str]:
    """Every key this format can write and read, main key first."""
    keys = [MAIN_KEY]
    for spec in iter_fields():
        key = key_for(spec.path)
        if key not in keys:
            keys.append(key)
    return keys


def _is_method_enable(spec: FieldSpec) -> bool:
    return method_of(spec.path) is not None and spec.path.count(".") == 1 and spec.path.endswith(".enabled")


def _is_switch(spec: FieldSpec) -> bool:
    """A setting whose key's presence is its value: a method's enable, or a FLAG_KEYS switch."""
    return _is_method_enable(spec) or spec.path in FLAG_KEYS


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def format_value(spec: FieldSpec, value: Any) -> str:
    if spec.kind == "bool":
        return "1" if value else "0"
    if spec.kind == "float":
        text = repr(float(value))  # shortest decimal that reads back to the same float
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def parse_value(spec: FieldSpec, text: str) -> Any:
    """The typed value of `text` for this setting, or None when it is not a valid value."""
    try:
        return values.parse(spec, text)
    except SettingsError:
        return None


def _tokens(value: str) -> tuple[int | None, dict[str, str]]:
    """(version or None, token -> raw value) of one key's value."""
    version, tokens = None, {}
    for word in str(value).split():
        name, eq, raw = word.partition("=")
        if eq:
            tokens[name] = raw
        elif (m := _VERSION_TOKEN.match(word)) is not None:
            version = int(m.group(1))
    return version, tokens


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def to_params(settings: SlothSettings) -> dict[str, str]:
    """The info-text entries for an enabled extension: the main key plus one key per enabled method."""
    values = to_flat(settings)
    words: dict[str, list[str]] = {MAIN_KEY: [f"v{FORMAT_VERSION}"]}
    enabled_methods = {method_of(s.path) for s in iter_fields() if _is_method_enable(s) and values[s.path]}
    for spec in iter_fields():
        method = method_of(spec.path)
        if spec.path in FLAG_KEYS and values[spec.path]:
            words.setdefault(key_for(spec.path), [])
        if _is_switch(spec) or (method is not None and method not in enabled_methods):
            continue
        word = f"{token_for(spec.path)}={format_value(spec, values[spec.path])}"
        words.setdefault(key_for(spec.path), []).append(word)
    for method in enabled_methods:  # a method whose only setting is `enabled` still needs its key
        words.setdefault(key_for(f"{method}.enabled"), [])
    ordered = [k for k in all_keys() if k in words]
    return {key: " ".join(words[key]) or "on" for key in ordered}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def is_enabled(params: Mapping[str, Any]) -> bool:
    return MAIN_KEY in migrated(params)


def read(params: Mapping[str, Any], migrations: Iterable[Migration] | None = None) -> dict[str, Any] | None:
    """Setting path -> value found in `params` (parsed info text), or None when the extension was off.

    Method enables are always present (True/False); the other settings of a disabled method are
    absent, as are tokens that are missing or invalid (`problems` says which were invalid).
    """
    return read_checked(params, migrations)[0]


def problems(params: Mapping[str, Any], migrations: Iterable[Migration] | None = None) -> list[SettingsError]:
    """Why tokens of our keys in `params` were skipped: bad values and unknown names."""
    return read_checked(params, migrations)[1]


def read_checked(params: Mapping[str, Any], migrations: Iterable[Migration] | None = None
                 ) -> tuple[dict[str, Any] | None, list[SettingsError]]:
    """(`read`'s result, `problems`' result), parsing the text once."""
    params = migrated(params, migrations)
    if MAIN_KEY not in params:
        return None, []
    parsed = {key: _tokens(params[key])[1] for key in all_keys() if key in params}
    out: dict[str, Any] = {}
    bad: list[SettingsError] = []
    known: dict[str, list[str]] = {}
    for spec in iter_fields():
        key = key_for(spec.path)
        if _is_switch(spec):
            out[spec.path] = key in parsed
            continue
        known.setdefault(key, []).append(token_for(spec.path))
        raw = parsed.get(key, {}).get(token_for(spec.path))
        if raw is None:
            continue
        try:
            out[spec.path] = values.parse(spec, raw)
        except SettingsError as err:
            bad.append(err)
    for key, tokens in parsed.items():
        for token in tokens:
            if token not in known.get(key, ()):
                bad.append(values.unknown(f"{key}: {token}", [f"{key}: {t}" for t in known.get(key, ())]))
    return out, bad


class PasteKey(str):
    """An info-text label that is also the WebUI paste function for one control.

    The WebUI calls a callable paste target with the parsed parameters (UI paste and the API's
    ``infotext`` field) and matches string targets against ``paste_field_names`` when sending
    values between tabs; this object is both, so every control takes part in all three.
    `path` is a setting's dotted path, ``"enabled"`` (the extension's own toggle), `PROBLEMS`
    (the hidden control that carries bad tokens into an API job; empty for a UI paste) or
    `STATUS` (the status line that shows them after a UI paste).
    """

    path: str

    def __new__(cls, label: str, path: str):
        obj = super().__new__(cls, label)
        obj.path = path
        return obj

    def __call__(self, params: Mapping[str, Any]):
        try:
            if self.path == PROBLEMS:  # the API's infotext field only; a UI paste shows STATUS instead
                return "" if params.get(UI_PASTE_MARK) else problems_text(params)
            if self.path == STATUS:
                text = problems_text(params)
                return f"Sloth: ignored from the pasted info text: {text}" if text else ""
            if self.path == "enabled":
                return is_enabled(params)
            values = read(params)
            return None if values is None else values.get(self.path)
        except Exception:  # a paste must never fail because of our keys (1.7 does not catch this)
            return None

    def __reduce__(self):
        return PasteKey, (str(self), self.path)


PROBLEMS = "paste_problems"  # PasteKey path of the hidden control carrying them to the job (API)
STATUS = "paste_status"  # PasteKey path of the status line showing them (UI)
UI_PASTE_MARK = "(Sloth: pasted in the UI)"  # no parsed key can start with "(" (KEY_PATTERN)
MAX_PROBLEMS = 5


def mark_ui_paste(params: MutableMapping[str, Any]) -> None:
    """Called from the WebUI's infotext-pasted callback, which runs for UI pastes but not for the
    API's ``infotext`` field: a UI paste reports problems in the status line, the API fails the job."""
    params[UI_PASTE_MARK] = True


def problems_text(params: Mapping[str, Any]) -> str:
    """'' or the first few `problems` of `params`, for one message."""
    found = [str(err) for err in problems(params)]
    if len(found) > MAX_PROBLEMS:
        found[MAX_PROBLEMS:] = [f"and {len(found) - MAX_PROBLEMS} more"]
    return "; ".join(found)


def problems_paste_key() -> PasteKey:
    return PasteKey(f"{MAIN_KEY} problems", PROBLEMS)


def status_paste_key() -> PasteKey:
    return PasteKey(f"{MAIN_KEY} status", STATUS)


def paste_keys() -> dict[str, PasteKey]:
    """``"enabled"`` and every setting path -> its paste target, labelled "<key> <token>"."""
    out = {"enabled": PasteKey(MAIN_KEY, "enabled")}
    for spec in iter_fields():
        key = key_for(spec.path)
        label = key if _is_switch(spec) else f"{key} {token_for(spec.path)}"
        out[spec.path] = PasteKey(label, spec.path)
    return out


# ---------------------------------------------------------------------------------------------
# Old keys
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Migration:
    """Upgrades parsed info-text parameters from an older format to `to_version`.

    `applies(params)` says whether `params` hold the older format; `upgrade(params)` rewrites
    them in place (remove the old keys, write the new ones, set ``Sloth: v<to_version> ...``).
    """

    to_version: int
    applies: Callable[[Mapping[str, Any]], bool]
    upgrade: Callable[[MutableMapping[str, Any]], None]


MIGRATIONS: tuple[Migration, ...] = ()  # v1 is the first format; add upgrades here, oldest first


def version_of(params: Mapping[str, Any]) -> int | None:
    """The format version of the main key's value, or None when it is absent or unversioned."""
    if MAIN_KEY not in params:
        return None
    return _tokens(params[MAIN_KEY])[0]


def migrate(params: MutableMapping[str, Any], migrations: Iterable[Migration] | None = None) -> list[str]:
    """Upgrade old keys in `params` in place, oldest format first; returns what was upgraded."""
    migrations = MIGRATIONS if migrations is None else migrations
    done = []
    for migration in sorted(migrations, key=lambda m: m.to_version):
        if migration.applies(params):
            migration.upgrade(params)
            done.append(f"upgraded Sloth info text to v{migration.to_version}")
    return done


def migrated(params: Mapping[str, Any], migrations: Iterable[Migration] | None = None) -> Mapping[str, Any]:
    """`params` with old keys upgraded, without touching the caller's dict."""
    migrations = tuple(MIGRATIONS if migrations is None else migrations)
    if not any(m.applies(params) for m in migrations):
        return params
    copy = dict(params)
    migrate(copy, migrations)
    return copy
