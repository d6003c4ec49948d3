"""Stand-in for A1111 v1.10.1 ``modules/ui.py`` (written from the API, not the real code).

Kept: the two module attributes ``infotext_utils.add_paste_fields`` writes for old extensions
(``txt2img_paste_fields``/``img2img_paste_fields``), and ``create_ui()``, which -- as the real
one -- initializes both tabs' script runners and builds their UIs (txt2img first, then
img2img): ``initialize_scripts``, ``prepare_ui``, then the sections in the real order with
``setup_ui`` for the "scripts" section, then ``add_paste_fields`` per tab and the tab's blocks
added to the ui-config.json registry (``loadsave``, see ui_loadsave.py). The real ``create_ui``
is called by ``webui.py`` after ``script_callbacks.before_ui_callback()`` (full UI), and by
``modules/api/api.py`` ``Api.__init__`` when the runners have no scripts yet (``--nowebui``:
``webui.api_only`` calls ``before_ui_callback()`` only after ``create_api``). Only the script
components of each tab (plus prompt/size/cfg/batch paste fields) are built; nothing is served.
"""
import gradio as gr

from modules import infotext_utils, scripts, ui_loadsave

txt2img_paste_fields = []
img2img_paste_fields = []

SECTION_ORDER = ["prompt", "image", "inpaint", "sampler", "accordions", "checkboxes", "dimensions", "cfg", "denoising", "seed", "batch", "override_settings"]

loadsave = ui_loadsave.UiLoadsave(None)
"""The ui-config.json registry of the last ``create_ui`` (each tab added as in the real one)."""

tab_components = {}
"""``{"txt2img": {...}, "img2img": {...}}``: the base components built per tab (stand-in only)."""


def _build_tab(runner, is_img2img):
    tabname = "img2img" if is_img2img else "txt2img"
    runner.initialize_scripts(is_img2img=is_img2img)
    runner.prepare_ui()
    comps = {}
    with gr.Blocks() as interface:
        comps["prompt"] = gr.Textbox(label="Prompt", elem_id=f"{tabname}_prompt")
        comps["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id=f"{tabname}_neg_prompt")
        custom = []
        for script in scripts.scripts_txt2img.scripts + scripts.scripts_img2img.scripts:
            if isinstance(script.section, str) and script.section not in SECTION_ORDER and script.section not in custom:
                custom.append(script.section)
        for section in SECTION_ORDER + custom + ["scripts"]:
            if section == "scripts":
                runner.setup_ui()
            if section == "dimensions":
                comps["width"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512, elem_id=f"{tabname}_width")
                comps["height"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512, elem_id=f"{tabname}_height")
            elif section == "cfg":
                comps["cfg_scale"] = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, label='CFG Scale', value=7.0, elem_id=f"{tabname}_cfg_scale")
            elif section == "batch":
                comps["batch_size"] = gr.Slider(minimum=1, maximum=8, step=1, label='Batch size', value=1, elem_id=f"{tabname}_batch_size")
            runner.setup_ui_for_section(section)

    fields = [
        infotext_utils.PasteField(comps["prompt"], "Prompt", api="prompt"),
        infotext_utils.PasteField(comps["negative_prompt"], "Negative prompt", api="negative_prompt"),
        infotext_utils.PasteField(comps["cfg_scale"], "CFG scale", api="cfg_scale"),
        infotext_utils.PasteField(comps["width"], "Size-1", api="width"),
        infotext_utils.PasteField(comps["height"], "Size-2", api="height"),
        infotext_utils.PasteField(comps["batch_size"], "Batch size", api="batch_size"),
        *runner.infotext_fields,
    ]
    infotext_utils.add_paste_fields(tabname, None, fields, None)
    tab_components[tabname] = comps
    loadsave.add_block(interface, tabname)
    return fields


def create_ui():
    global loadsave
    loadsave = ui_loadsave.UiLoadsave(None)
    scripts.scripts_current = scripts.scripts_txt2img
    _build_tab(scripts.scripts_txt2img, False)
    scripts.scripts_current = scripts.scripts_img2img
    _build_tab(scripts.scripts_img2img, True)
    scripts.scripts_current = None
