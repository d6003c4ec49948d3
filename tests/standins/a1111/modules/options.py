"""Stand-in for A1111 v1.10.1 ``modules/options.py`` (written from the API, not the real code).

Mirrors ``OptionInfo`` (constructor arguments and the chainable ``info``/``link``/
``needs_reload_ui``... helpers), ``options_section`` and ``Options`` with the real
attribute semantics:

* ``opts.key`` reads ``opts.data[key]``, falling back to the registered default,
  and raises ``AttributeError`` for unknown keys (so ``getattr(opts, k, d)`` works);
* assigning ``opts.key = v`` stores into ``opts.data`` for registered keys only
  (``do_not_save`` keys are silently ignored, hidden ``visible=False`` ones raise);
* ``set(key, value, is_api=False, run_callbacks=True)`` returns whether it changed and
  runs ``onchange`` (reverting on an exception), ``onchange(key, func, call=True)``,
  ``add_option``, ``get_default``, ``cast_value``.

Simplified: no settings file (``save``/``load``), no ``--freeze-settings`` checks,
no UI ordering (``reorder``/``dumpjson``).
"""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before='', comment_after='', infotext=None, restrict_api=False, category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    def __init__(self, text):
        super().__init__(str(text).strip(), label='')
        self.do_not_save = True


def options_section(section_identifier, options_dict):
    for info in options_dict.values():
        if len(section_identifier) == 2:
            info.section = section_identifier
        elif len(section_identifier) == 3:
            info.section = section_identifier[0:2]
            info.category_id = section_identifier[2]
    return options_dict


_builtin_fields = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    typemap = {int: float}

    def __init__(self, data_labels, restricted_opts):
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts

    def __setattr__(self, key, value):
        if key in _builtin_fields:
            return object.__setattr__(self, key, value)

        if self.data is not None and (key in self.data or key in self.data_labels):
            info = self.data_labels.get(key, None)
            if info is not None and info.do_not_save:
                return
            comp_args = info.component_args if info else None
            if isinstance(comp_args, dict) and comp_args.get('visible', True) is False:
                raise RuntimeError(f"not possible to set '{key}' because it is restricted")
            self.data[key] = value
            return

        return object.__setattr__(self, key, value)

    def __getattr__(self, item):
        if item in _builtin_fields:
            return object.__getattribute__(self, item)
        data = object.__getattribute__(self, "data")
        if data is not None and item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        return object.__getattribute__(self, item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        old = self.data.get(key, None)
        if old == value:
            return False

        option = self.data_labels[key]
        if option.do_not_save:
            return False
        if is_api and option.restrict_api:
            return False

        try:
            setattr(self, key, value)
        except RuntimeError:
            return False

        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception as e:
                from modules import errors
                errors.display(e, f"changing setting {key} to {value}")
                setattr(self, key, old)
                return False

        return True

    def get_default(self, key):
        label = self.data_labels.get(key)
        return None if label is None else label.default

    def same_type(self, x, y):
        if x is None or y is None:
            return True
        return self.typemap.get(type(x), type(x)) == self.typemap.get(type(y), type(y))

    def onchange(self, key, func, call=True):
        self.data_labels.get(key).onchange = func
        if call:
            func()

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def cast_value(self, key, value):
        if value is None:
            return None
        default = self.data_labels[key].default
        if default is None:
            default = getattr(self, key, None)
        if default is None:
            return None
        expected = type(default)
        if expected == bool and value == "False":
            return False
        return expected(value)
