"""Stand-in for the two module attributes of A1111 v1.10.1 ``modules/ui.py`` that
``infotext_utils.add_paste_fields`` writes for old extensions
(``txt2img_paste_fields``/``img2img_paste_fields``).  Written from the API; the UI
itself is not built by the stand-in.
"""
txt2img_paste_fields = []
img2img_paste_fields = []
