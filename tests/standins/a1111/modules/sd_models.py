"""Stand-in for A1111 v1.10.1 ``modules/sd_models.py`` (written from the API, not the real code).

Only what the refiner switch uses:

* ``checkpoints_list``: title -> ``CheckpointInfo``; tests register a ready model with
  ``register_checkpoint(title, model)`` (the model gets ``sd_checkpoint_info``);
* ``get_closet_checkpoint_match(search)`` finds a registered title;
* ``reload_model_weights(sd_model=None, info=None)``: a checkpoint of another architecture (SDXL base
  -> refiner) is a freshly built model (``load_model``): ``shared.sd_model`` is replaced, and the
  hijack re-applies the attention optimisation on it -- ``sd_hijack.apply_optimizations`` assigns
  ``CrossAttention.forward`` of ldm and sgm again, replacing whatever forward was on the class;
  ``model_loaded_callback`` runs;
* ``SkipWritingToConfig`` is a no-op context manager.
"""
import contextlib
import types

from ldm.modules.attention import CrossAttention

from modules import script_callbacks, shared

checkpoints_list = {}

# the forward the WebUI's optimisation installs (the stand-in's "optimisation" is ldm's own forward)
OPTIMISED_FORWARD = CrossAttention.__dict__["forward"]


def register_checkpoint(title, model):
    info = types.SimpleNamespace(title=title, name_for_extra=title, short_title=title[:10], model=model)
    model.sd_checkpoint_info = info
    checkpoints_list[title] = info
    return info


def get_closet_checkpoint_match(search):
    return checkpoints_list.get(search)


def apply_optimizations():
    CrossAttention.forward = OPTIMISED_FORWARD


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    if info is None or shared.sd_model is not None and shared.sd_model.sd_checkpoint_info is info:
        return shared.sd_model
    shared.sd_model = info.model
    apply_optimizations()
    script_callbacks.model_loaded_callback(shared.sd_model)
    return shared.sd_model


class SkipWritingToConfig(contextlib.ContextDecorator):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
