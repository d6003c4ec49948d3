"""The WebUI side of sd-webui-sloth: the only package that may import WebUI modules or gradio.

Modules (each imports the WebUI or gradio only where it says so):

* ``labels``  -- names of every setting in the UI, X/Y/Z and element ids (pure);
* ``args``    -- the Script's positional args / API dict / X/Y/Z attributes -> settings (pure);
* ``hooks``   -- what the Script's hooks do: resolve settings, write info text, attach per pass;
* ``backend`` -- which WebUI we run in and the adapter that patches it;
* ``ui``      -- the gradio accordion (imports gradio, and ``modules.ui_components`` if present);
* ``xyz``     -- the X/Y/Z plot axes (touches the WebUI's xyz_grid module it is given);
* ``hints``   -- the hover hints written to ``javascript/sloth-hints.js``.

Importing this package imports nothing.
"""
