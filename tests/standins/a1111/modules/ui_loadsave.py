"""Stand-in for A1111 v1.10.1 ``modules/ui_loadsave.py`` (written from its behaviour, not the
real code): the registry behind ``ui-config.json``, without reading or writing the file.

Kept, as in the real ``UiLoadsave``:
* ``add_block(x, path)`` walks a gradio block: a block with children is walked (its own label is
  not used), a component with a label is added as ``f"{path}/{label}"``, an unlabelled button by
  its value; ``create_ui`` calls it with the tab name (``"txt2img"``, ``"img2img"``) as path;
* ``add_component(path, x)`` makes one key per saved field, ``f"{path}/{field}"``, prefixed with
  ``customscript/<script file name>/`` when the component carries ``custom_script_source``
  (set on every control a Script's ``ui()`` returned); ``do_not_save_to_config`` skips it;
  fields: ``visible`` (visible components), ``value`` (+ ``minimum``/``maximum``/``step`` for a
  Slider), the InputAccordion's ``value`` and its accordion's ``visible``/``open``;
* a saved value is applied to the component that owns the key; ``component_mapping`` (used to
  save the current values) keeps only the **first** component of a ``value`` key, so two
  controls with one label share one saved value.
"""
import gradio as gr

from modules.ui_components import InputAccordion, ToolButton


class UiLoadsave:
    def __init__(self, filename=None, ui_settings=None):
        self.filename = filename
        self.ui_settings = dict(ui_settings or {})
        self.component_mapping = {}
        self.finalized_ui = False

    def add_component(self, path, x):
        assert not self.finalized_ui

        def apply_field(obj, field):
            key = f"{path}/{field}"
            if getattr(obj, 'custom_script_source', None) is not None:
                key = f"customscript/{obj.custom_script_source}/{key}"
            if getattr(obj, 'do_not_save_to_config', False):
                return
            if isinstance(obj, gr.Accordion) and isinstance(x, InputAccordion) and field == 'value':
                field = 'open'
            saved = self.ui_settings.get(key, None)
            if saved is None:
                self.ui_settings[key] = getattr(obj, field)
            else:
                setattr(obj, field, saved)
            if field == 'value' and key not in self.component_mapping:
                self.component_mapping[key] = obj

        if type(x) in [gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown, ToolButton, gr.Button] and x.visible:
            apply_field(x, 'visible')
        if type(x) == gr.Slider:
            for field in ('value', 'minimum', 'maximum', 'step'):
                apply_field(x, field)
        if type(x) in (gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown):
            apply_field(x, 'value')
        if type(x) == InputAccordion:
            if hasattr(x, 'custom_script_source'):
                x.accordion.custom_script_source = x.custom_script_source
            if x.accordion.visible:
                apply_field(x.accordion, 'visible')
            apply_field(x, 'value')
            apply_field(x.accordion, 'value')

    def add_block(self, x, path=""):
        if hasattr(x, 'children'):
            for c in x.children:
                self.add_block(c, path)
        elif x.label is not None:
            self.add_component(f"{path}/{x.label}", x)
        elif isinstance(x, gr.Button) and x.value is not None:
            self.add_component(f"{path}/{x.value}", x)
