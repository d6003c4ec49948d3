"""The maps recorder (lib_sloth.maps) on the real tiny ldm UNet: it records what the engine did and
changes nothing; with no recorder nothing is recorded at all."""
import math
import os
import subprocess
import sys

import pytest
import torch

import lib_sloth.attention as attention_module
import lib_sloth.methods as methods_module
import lib_sloth.nearsighted as nearsighted_module
import lib_sloth.sag as sag_module
from lib_sloth import maps
from lib_sloth.guidance import GuidedStep
from lib_sloth.layer_call import LayerCall, Plan, TokenGrid
from lib_sloth.maps import MapRecorder, kv_share
from lib_sloth.patch import SlothPatch
from lib_sloth.prediction import NoiseSpace
from lib_sloth.sag import SagPass
from lib_sloth.settings import settings_from_dict
from sampling import sd_alphas_cumprod
from unets import unet_inputs

STEPS = 5
HW = (32, 32)  # SD1.5 layout: attention grids 32x32, 16x16, 8x8, middle 4x4
# SAG leaves every other layer to ldm's own forward (an explicit N x N map): a smaller latent
SAG_HW = (16, 24)  # grids 16x24, 8x12, 4x6, middle 2x3
METHODS = {
    "slothful": {"slothful": {"enabled": True, "peak_time": 0.5}},
    "tile": {"tile": {"enabled": True, "tile_size": 16}},
    "nearsighted": {"nearsighted": {"enabled": True, "base_tile_size": 16, "peak_tile_size": 20,
                                    "peak_time": 0.75}},
    "agentsd": {"agentsd": {"enabled": True}},
    "sag": {"sag": {"enabled": True, "scale": 1.0, "threshold": 1.0}},
}


def S(name):
    return settings_from_dict(METHODS[name])


def run(unet, settings, recorder=None, steps=STEPS, batch=2, seed=7, hw=None):
    """A CFG loop: rows [cond x batch, uncond x batch], SAG guidance in eps space; returns the outputs."""
    hw = hw or (SAG_HW if settings.sag.enabled else HW)
    x, _, ctx = unet_inputs(unet, 2 * batch, *hw, seed=3)
    x = x[:batch]
    acp = sd_alphas_cumprod()
    patch = SlothPatch(unet, settings, seed=seed, recorder=recorder)
    sag = patch.guidance("sag") or SagPass(settings.sag, patch)
    outs = []
    with torch.no_grad(), patch:
        for i in range(steps):
            patch.set_step(i, steps)
            t = torch.full((2 * batch,), 900 - 150 * i, dtype=torch.long)
            sag.arm(slice(-batch, None))
            out = unet(torch.cat([x, x]), t, ctx)
            cond, uncond = out[:batch], out[batch:]
            cfg = uncond + 5.0 * (cond - uncond)
            space = NoiseSpace.from_alphas_cumprod(acp, t[batch:], like=x)
            cfg = sag.guide(cfg, GuidedStep(x, uncond, cond, lambda which, xd: unet(xd, t[batch:], ctx[batch:]),
                                            space, "eps"))
            outs.append(cfg)
            x = x - 0.1 * cfg
    return torch.stack(outs), patch


@pytest.mark.parametrize("name", list(METHODS))
def test_recording_changes_no_output_bit_for_bit(sd15, name):
    plain, patch = run(sd15, S(name))
    assert patch.recorder is None
    recorder = MapRecorder(S(name), seed=7)
    recorded, _ = run(sd15, S(name), recorder)
    assert torch.equal(plain, recorded)
    assert not recorder.empty


def test_without_a_recorder_no_recording_code_runs(sd15, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("recording code ran without a recorder")

    monkeypatch.setattr(MapRecorder, "layer", boom)
    monkeypatch.setattr(MapRecorder, "overlay", boom)
    monkeypatch.setattr(maps, "kv_share", boom)
    for name in METHODS:
        run(sd15, S(name), steps=2)


def _track_patch(monkeypatch):
    """A list that receives every SlothPatch created (the spies read its current step)."""
    box = []
    original_init = SlothPatch.__init__

    def init(self, *a, **k):
        original_init(self, *a, **k)
        box.append(self)

    monkeypatch.setattr(SlothPatch, "__init__", init)
    return box


def _spy_keys(monkeypatch, box):
    """(step, layer tokens, keys per query) of every attention the rewrites run."""
    import lib_sloth.agentsd as agentsd_module

    seen, layer = [], {}
    original_attend, original_agents, original_match = (attention_module.attend, agentsd_module.agent_attention,
                                                        agentsd_module.match)

    def attend(q, k, v, heads, upcast=False):
        seen.append((box[0].step, layer.pop("n", q.shape[1]), k.shape[1]))
        return original_attend(q, k, v, heads, upcast)

    def agent_attention(q, k, v, agents, *args, **kwargs):
        seen.append((box[0].step, layer.pop("n"), agents.shape[1]))
        return original_agents(q, k, v, agents, *args, **kwargs)

    def match(x, h, w, *args, **kwargs):
        layer["n"] = h * w
        return original_match(x, h, w, *args, **kwargs)

    monkeypatch.setattr("lib_sloth.slothful.attend", attend)
    monkeypatch.setattr(agentsd_module, "attend", attend)
    monkeypatch.setattr(agentsd_module, "agent_attention", agent_attention)
    monkeypatch.setattr(agentsd_module, "match", match)
    return seen


@pytest.mark.parametrize("name", ["slothful", "agentsd"])
def test_budget_is_the_key_count_the_attention_really_got(sd15, monkeypatch, name):
    seen = _spy_keys(monkeypatch, _track_patch(monkeypatch))
    recorder = MapRecorder(S(name), seed=7)
    run(sd15, S(name), recorder, batch=1)
    measured = {(step, n): keys / n for step, n, keys in seen}
    recorded = {(step, h * w): share for key, series in recorder.budget.items()
                for (h, w) in [recorder.grids[key]] for step, share in series.items() if share < 1}
    assert measured and measured == recorded
    if name == "agentsd":  # the early/late switch: agents early (few keys), plain ToMe late
        series = recorder.budget_series(("input", 0))
        assert series[0] < 0.1 and series[-1] == pytest.approx(0.6, abs=0.01)


def test_untouched_levels_have_the_full_budget_and_the_time_decay_shows(sd15):
    recorder = MapRecorder(S("slothful"), seed=7)
    run(sd15, S("slothful"), recorder, steps=7)
    (middle_key,) = [k for k in recorder.levels() if k[0] == "middle"]
    middle = recorder.budget_series(middle_key)
    assert middle == [1.0] * 7  # keep_middle: left alone
    shallow = recorder.budget_series(("input", 0))
    assert min(shallow) < 0.5 and shallow[3] == min(shallow)  # strongest at the peak (0.5 of 6 steps)
    assert shallow[0] > min(shallow) and shallow[-1] > min(shallow)
    deep = recorder.budget_series(("input", 2))
    assert all(d >= s for d, s in zip(deep, shallow))  # depth decay: deeper levels keep more keys
    assert [k for k in recorder.levels()][0] == ("input", 0) and recorder.levels()[-1] == ("output", 0)


@pytest.mark.parametrize("name", ["tile", "nearsighted"])
def test_tile_records_are_the_grids_the_engine_tiled_with(sd15, monkeypatch, name):
    box = _track_patch(monkeypatch)
    used = {}  # (step, h, w) -> set of rects the engine cut
    original_tile = nearsighted_module.tile

    def tile(x, rect):
        if x.dim() == 4:
            used.setdefault((box[0].step, x.shape[1], x.shape[2]), set()).add(rect)
        return original_tile(x, rect)

    monkeypatch.setattr(nearsighted_module, "tile", tile)
    recorder = MapRecorder(S(name), seed=7)
    run(sd15, S(name), recorder, batch=1, steps=STEPS)
    assert recorder.tiles
    steps = recorder.tile_steps(STEPS)
    assert steps == ((3, 0) if name == "nearsighted" else (0, STEPS - 1))
    for (step, level), record in recorder.tiles.items():
        assert step in steps
        assert set(record.grid.rects()) == used[(step, record.grid.h, record.grid.w)]
        boxes = record.tile_boxes()
        assert sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in boxes) == record.grid.h * record.grid.w
        assert len(boxes) == record.grid.tiles
    if name == "nearsighted":
        peak, far = recorder.tile_records(0)
        assert (peak.step, far.step) == (3, 0) and (peak.tile_size, far.tile_size) == (20, 16)
        assert peak.global_ratio == 0.8 and far.global_ratio < 0.8


def test_sag_records_the_engines_own_mask_of_the_first_image(sd15, monkeypatch):
    box = _track_patch(monkeypatch)
    masks = {}
    original_degrade = sag_module.degrade

    def degrade(x0, mask, sigma):
        masks[box[0].step] = mask.clone()
        return original_degrade(x0, mask, sigma)

    monkeypatch.setattr(sag_module, "degrade", degrade)
    recorder = MapRecorder(S("sag"), seed=7)
    run(sd15, S("sag"), recorder, batch=2, steps=STEPS)
    records = recorder.overlay_records("sag")
    assert [r.step for r in records] == [0, 2, STEPS - 1]
    threshold = S("sag").sag.threshold
    for r in records:
        engine = masks[r.step]
        mask, received = r.overlay.mask, r.overlay.heat
        assert engine.shape[0] == 2  # the guidance masked both images; the record keeps the first
        assert torch.equal(mask, engine[0, 0] > 0.5) and mask.shape == SAG_HW
        assert received.shape == (2, 3) and math.isclose(float(received.mean()), 1.0, rel_tol=1e-4)
        assert torch.equal(mask, torch.nn.functional.interpolate(
            (received > threshold).float()[None, None], size=SAG_HW, mode="nearest")[0, 0] > 0.5)
    assert recorder.nbytes == sum(r.nbytes for r in records) == 3 * (2 * 3 * 4 + 16 * 24)


def test_kv_share_knows_every_planner_of_the_engine():
    call = LayerCall("input", TokenGrid(32, 32, 0), 2, 2, 5, 7)
    for name in ("slothful", "tile", "nearsighted", "agentsd"):
        plan = methods_module.plan_layer(S(name), call)
        assert plan is not None, name
        share = kv_share(plan, call)
        assert share is not None and 0 < share < 1, (name, share)
    assert kv_share(None, call) == 1.0

    class Unknown(Plan):  # a plan that does not say its key count is not guessed: it cannot exist
        def run(self, layer, x, k_in, v_in, upcast):
            return x

    with pytest.raises(TypeError):
        Unknown()


def test_the_engine_side_never_imports_pil_or_the_webui():
    code = ("import sys; import lib_sloth.maps, lib_sloth.patch, lib_sloth.sag; "
            "bad = {'PIL', 'gradio', 'modules'} & {m.split('.')[0] for m in sys.modules}; assert not bad, bad")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]


def test_1d_pool_modes_record_the_global_sample_of_the_token_row():
    from lib_sloth.geometry import window_1d
    from lib_sloth.layer_call import TokenGrid
    from lib_sloth.methods import plan_layer

    s = settings_from_dict({"nearsighted.enabled": True, "nearsighted.input.mode": "1D_AVG"})
    recorder = MapRecorder(s, seed=7)
    step = round(s.nearsighted.peak_time * 4)  # the schedule's peak of 5 steps: a kept tile step
    call = LayerCall("input", TokenGrid(40, 40, 0), 2, step, 5, 7)
    plan = plan_layer(s, call)
    recorder.layer(call, plan, (40, 40))
    (record,) = recorder.tiles.values()
    g = window_1d(plan.global_stride, 1600)
    assert record.global_window is None and record.global_1d == g
    cells = record.global_cells()
    assert len(cells) == -(-1600 // g) and cells[1] == divmod(g, 40)
