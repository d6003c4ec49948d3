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
"""
import gradio as gr


class FormComponent:
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
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get('elem_id')
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1

        checkbox_kwargs = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **checkbox_kwargs)

        self.change(fn=None, _js='function(checked){ inputAccordionChecked("' + self.accordion_id + '", checked); }', inputs=[self])

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
