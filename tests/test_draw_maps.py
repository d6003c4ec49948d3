"""The map drawing (lib_sloth.draw_maps): what it draws is the engine's own geometry and mask."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lib_sloth.maps import MapRecorder
from lib_sloth.tiling import offset_rng, tile_grid, with_offsets
from lib_sloth import draw_maps
from test_maps import S, SAG_HW, run


@pytest.fixture(scope="module")
def recorded(sd15):
    out = {}
    for name in ("sag", "nearsighted", "tile", "slothful"):
        recorder = MapRecorder(S(name), seed=7)
        # 40x40: tiles of 16 leave padding, so the seams move with the step
        run(sd15, S(name), recorder, steps=5, batch=1, hw=(40, 40) if name in ("tile", "nearsighted") else None)
        out[name] = recorder
    return out


def final_image(size):
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype(np.uint8))


@pytest.mark.parametrize("n_in, n_out", [(4, 32), (3, 24), (16, 128), (6, 512), (64, 512), (7, 20), (13, 333)])
def test_upsampling_is_torchs_nearest_index_for_index(n_in, n_out):
    grid = np.arange(n_in * (n_in + 1)).reshape(n_in, n_in + 1) % 5 == 0
    ours = draw_maps.upsample_nearest(grid, (n_out + 3, n_out))
    theirs = F.interpolate(torch.from_numpy(grid).float()[None, None], size=(n_out, n_out + 3), mode="nearest")
    assert np.array_equal(ours, theirs[0, 0].numpy() > 0.5)


@pytest.mark.parametrize("image_size", [(SAG_HW[1] * 8, SAG_HW[0] * 8), (1024, 683)])
def test_sag_overlay_is_the_engines_mask_upsampled(recorded, image_size):
    recorder = recorded["sag"]
    size = draw_maps.panel_size(image_size)
    for record in recorder.overlay_records("sag"):
        expected = F.interpolate(record.overlay.mask.float()[None, None], size=(size[1], size[0]), mode="nearest")[0, 0]
        assert np.array_equal(draw_maps.overlay_mask(record, size), expected.numpy() > 0.5)
        assert record.overlay.mask.any() and not record.overlay.mask.all()  # a mask worth drawing: some cells, not all
    (strip,) = draw_maps.render(recorder, final_image(image_size), "txt2img")
    n = len(recorder.overlay_records("sag"))
    assert strip.image.size == (n * size[0] + (n - 1) * draw_maps.GAP, size[1] + draw_maps.HEADER)
    assert "threshold 1" in strip.caption and "blur sigma 2" in strip.caption
    assert strip.image.info[draw_maps.INFO_KEY] == strip.caption


def test_sag_panel_tints_exactly_the_masked_pixels(recorded):
    record = recorded["sag"].overlay_records("sag")[0]
    size = (SAG_HW[1] * 8, SAG_HW[0] * 8)
    black = Image.new("RGB", size, (0, 0, 0))
    panel = np.asarray(draw_maps._overlay_panel(record, black)).astype(int)
    mask = draw_maps.overlay_mask(record, size)
    # the cyan tint adds blue only where the engine blurs (the heat map has blue only near white)
    heat = draw_maps._heat(draw_maps.upsample_nearest(np.zeros(record.overlay.heat.shape, np.float32), size))
    assert (heat[..., 2] == 0).all()
    assert (panel[mask][:, 2] > 0).all()


@pytest.mark.parametrize("name", ["nearsighted", "tile"])
def test_tile_drawing_is_the_engines_tiles_for_that_step_and_seed(recorded, name):
    recorder = recorded[name]
    image_size = (256, 256)
    size = draw_maps.panel_size(image_size)
    for level in recorder.tiled_levels():
        for record in recorder.tile_records(level):
            tiles, cells = draw_maps.tile_geometry_px(record, size)
            scale_y, scale_x = size[1] / record.grid.h, size[0] / record.grid.w
            engine_boxes = sorted((r.y0 + i * r.bh, r.x0 + j * r.bw, r.bh, r.bw) for r in record.grid.rects()
                                  for i in range(r.ky) for j in range(r.kx))
            drawn = sorted((round(y0 / scale_y), round(x0 / scale_x), round((y1 - y0) / scale_y),
                            round((x1 - x0) / scale_x)) for x0, y0, x1, y1 in tiles)
            assert drawn == engine_boxes
            if record.global_window is not None:
                gy, gx = record.global_window
                assert len(cells) == -(-record.grid.h // gy) * -(-record.grid.w // gx)
            # the seams are the engine's for this step and seed: the same draw, made independently
            expected = with_offsets(tile_grid(record.grid.h, record.grid.w, record.tile_size),
                                    offset_rng(7, record.step, level))
            assert record.grid == expected
        if len(recorder.tile_records(level)) < 2:  # tiled at one of the two steps only (one tile at the other)
            continue
        a, b = recorder.tile_records(level)
        if name == "tile":
            if a.grid.pad != (0, 0):
                assert (a.grid.oy, a.grid.ox) != (b.grid.oy, b.grid.ox)  # the seams moved between the steps
        else:
            assert (a.tile_size, a.global_ratio) != (b.tile_size, b.global_ratio)  # base -> peak
    maps = draw_maps.render(recorder, final_image(image_size), "txt2img")
    tile_images = [m for m in maps if "tiles" in m.caption]
    assert len(tile_images) == len(recorder.tiled_levels()) >= 1
    assert len(recorder.tile_records(0)) == 2
    for level, m in zip(recorder.tiled_levels(), tile_images):
        n = len(recorder.tile_records(level))
        assert m.image.size == (n * size[0] + (n - 1) * draw_maps.GAP, size[1] + draw_maps.HEADER)


def test_tile_outline_pixels_are_on_the_seams(recorded):
    record = recorded["tile"].tile_records(0)[0]
    size = (256, 256)
    panel = Image.new("RGB", size, (0, 0, 0))
    draw_maps._draw_tiles(panel, record)
    pixels = np.asarray(panel)
    tiles, _ = draw_maps.tile_geometry_px(record, size)
    is_tile = np.all(pixels == draw_maps.TILE, axis=-1)
    for x0, y0, x1, y1 in tiles:
        assert is_tile[y0, x0] and is_tile[y1 - 1, x1 - 1]
    inner = [(y0 + y1) // 2 for _, y0, _, y1 in tiles]
    assert not is_tile[inner[0], (tiles[0][0] + tiles[0][2]) // 2]


def test_budget_chart_has_one_legend_entry_per_level_and_a_fixed_size(recorded):
    recorder = recorded["slothful"]
    maps = draw_maps.render(recorder, final_image((256, 256)), "hires pass")
    assert [m.caption.split(" - ")[0] for m in maps] == ["Sloth K/V budget"]
    chart = maps[0].image
    w, h = draw_maps.CHART_SIZE
    assert chart.size == (48 + w + 16 + draw_maps.LEGEND_W, 12 + h + 30 + draw_maps.HEADER)
    assert "hires pass" in maps[0].caption and "Slothful" in maps[0].caption


@pytest.mark.parametrize("steps", [4, 2, 1, 7])
def test_budget_chart_axis_name_is_left_of_its_step_ticks_never_among_them(sd15, monkeypatch, steps):
    # seen in the real WebUIs: a 4-step job's axis read "1, 2, step, 4"
    recorder = MapRecorder(S("slothful"), seed=7)
    run(sd15, S("slothful"), recorder, steps=steps, batch=1)
    drawn = []
    text = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", lambda self, xy, t, *a, **k: (
        drawn.append((xy, t, k.get("font"))), text(self, xy, t, *a, **k))[1])
    draw_maps.budget_chart(recorder, "x")
    axis_y = 12 + draw_maps.CHART_SIZE[1] + 8
    row = sorted((xy[0] + font.getbbox(t)[0], xy[0] + font.getbbox(t)[2], t) for xy, t, font in drawn if xy[1] == axis_y)
    ticks = sorted({0, steps - 1, (steps - 1) // 2})
    assert [t for _, _, t in row] == ["step"] + [str(s + 1) for s in ticks]
    assert all(row[i][1] < row[i + 1][0] for i in range(len(row) - 1))  # left to right, no overlap


def test_render_order_and_nothing_for_an_empty_recorder(recorded):
    assert draw_maps.render(None, final_image((64, 64)), "x") == []
    assert draw_maps.render(MapRecorder(S("slothful")), final_image((64, 64)), "x") == []
    kinds = [m.caption.split(" - ")[0] for m in draw_maps.render(recorded["nearsighted"], final_image((64, 64)), "x")]
    tiled = len(recorded["nearsighted"].tiled_levels())
    assert tiled == 2 and kinds == ["Sloth Near-sighted Attention tiles"] * tiled + ["Sloth K/V budget"]


def test_panels_never_exceed_the_maximum_and_keep_the_aspect():
    assert draw_maps.panel_size((1024, 1024)) == (512, 512)
    assert draw_maps.panel_size((1216, 832)) == (512, 350)
    assert draw_maps.panel_size((256, 128)) == (256, 128)
