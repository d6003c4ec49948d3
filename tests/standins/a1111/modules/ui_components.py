"""Stand-in for A1111 v1.10.1 ``modules/ui_components.py`` (written from the API, not the real code).

Same classes and constructor behaviour under gradio 3.41.2:

* ``FormComponent`` mixin (``get_expected_parent`` -> ``gr.components.Form``), also
  installed on ``gr.Dropdown`` like the real module does;
* ``ToolButton`` (adds the ``tool`` class), ``ResizeHandleRow``, ``FormRow``,
  ``FormColumn``, ``FormGroup``, ``FormHTML``, ``FormColorPicker``, ``DropdownMulti``,
  ``DropdownEditable``;
* ``InputAccordion(value, **kwargs)``: a hidden ``gr.Checkbox`` (``elem_id`` =
  ``<accordion id>-checkbox``, ``visible=False``; its ``.value`` is the
  enabled state and it is what ``ui()`` returns as the input) plus
  ``self.accordion`` -- a ``gr.Accordion`` with ``elem_id`` = the given ``elem_id`` (or
  ``input-accordion-<n>``), ``label`` (default ``"Accordion"``), class
  ``input-accordion`` and ``open=value``.  ``with InputAccordion(...) as acc:`` enters
  the accordion; ``acc.extra()`` returns the ``gr.Column`` shown in its header.
  The JS link between checkbox and accordion is registered as in the WebUI but
  only runs in a browser.

Under gradio 4.40 this module stands in for Forge main's (same classes; see InputAccordion).
"""
import gradio as gr

if not gr.__version__.startswith("3."):
    # gradio 4 writes a .pyi next to every module that subclasses a component; Forge main's
    # modules/gradio_extensions.py skips classes marked webui_do_not_create_gradio_pyi_thank_you
    import gradio.component_meta as _component_meta

    _write_pyi = _component_meta.create_or_modify_pyi

    def _create_or_modify_pyi(component_class, class_name, events):
        if not getattr(component_class, "webui_do_not_create_gradio_pyi_thank_you", False):
            _write_pyi(component_class, class_name, events)

    _component_meta.create_or_modify_pyi = _create_or_modify_pyi


class FormComponent:
    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self):
        return gr.components.Form


gr.Dropdown.get_expected_parent = FormComponent.get_expected_parent


class ToolButton(FormComponent, gr.Button):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class ResizeHandleRow(gr.Row):
    webui_do_not_create_gradio_pyi_thank_you = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")

    def get_block_name(self):
        return "row"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class FormColorPicker(FormComponent, gr.ColorPicker):
    def get_block_name(self):
        return "colorpicker"


class DropdownMulti(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(FormComponent, gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class InputAccordion(gr.Checkbox):
    webui_do_not_create_gradio_pyi_thank_you = True
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get('elem_id')
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1

        checkbox_kwargs = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **checkbox_kwargs)

        # gradio 4 (Forge main, modules/ui_components.py @ dfdcbab6) spells it js=: Forge passes _js= and
        # its modules/gradio_extensions.py renames the keyword
        js_keyword = "_js" if gr.__version__.startswith("3.") else "js"
        self.change(fn=None, inputs=[self], **{js_keyword: 'function(checked){ inputAccordionChecked("'
                                               + self.accordion_id + '", checked); }'})

        accordion_kwargs = {
            **kwargs,
            "elem_id": self.accordion_id,
            "label": kwargs.get('label', 'Accordion'),
            "elem_classes": ['input-accordion'],
            "open": value,
        }
        self.accordion = gr.Accordion(**accordion_kwargs)

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + '-extra', elem_classes='input-accordion-extra', min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
