"""Draws a pass's recorded maps (lib_sloth.maps.MapRecorder) with PIL: the "Show Sloth maps" images.

    render(recorder, image, label) -> [MapImage(caption, image), ...]

in this order (the order the gallery and the API show them, after the generated images):

1. Each guidance method's overlays (SAG: the uncond's received attention): one strip of up to
   three panels (first, middle and last guided step): the final image under the overlay's heat
   (nearest-upsampled) with the cells it acted on outlined and tinted cyan; its tag (SAG:
   threshold and blur sigma) in the caption.
2. Tiled plans (Near-sighted Tile / Attention): one image per tiled level, shallowest first, of two
   panels (the schedule's peak step and the step farthest from it; without a schedule: first and
   last step): this step's tiles (yellow, with their seams) and the global sample's cells (cyan)
   over the final image; tile size and global ratio per panel.
3. K/V budget: keys per query as a share of the unpatched layer, per level across the steps of
   the pass (every enabled per-layer method); levels left alone are flat at 100 %.

Every image starts with a caption band that names the map, the pass and the image of the batch,
so the label survives the API, saving and any gallery; the caption is also in ``image.info``.
Panels are the final image scaled down to at most PANEL_MAX pixels on the long side. This module
is the drawing layer, above the engine (which never imports PIL) and below every front end
(the WebUI glue, the diffusers adapter, the demo).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import methods
from .maps import MapRecorder, OverlayRecord, TileRecord

PANEL_MAX = 512  # long side of one panel, in pixels (never upscaled)
HEADER = 44  # caption band height
GAP = 4  # between panels
CHART_SIZE = (640, 320)  # plot area of the budget chart, without caption and legend
LEGEND_W = 180
INFO_KEY = "Sloth map"  # image.info key that carries the caption (written into PNGs by the API)
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
TILE = (255, 210, 40)
GLOBAL = (40, 220, 255)
MASK = (40, 220, 255)
LINES = [(255, 99, 71), (255, 190, 40), (120, 220, 90), (70, 170, 255), (190, 120, 255), (255, 120, 200),
         (80, 220, 200), (200, 200, 120), (160, 160, 255), (255, 160, 120)]
ALONE = (130, 130, 140)
BLOCK_SHORT = {"input": "in", "middle": "mid", "output": "out"}


@dataclass(frozen=True)
class MapImage:
    caption: str
    image: Image.Image


# ---- geometry shared by the drawing and the tests --------------------------------------------
def panel_size(image_size: Tuple[int, int], max_side: int = PANEL_MAX) -> Tuple[int, int]:
    """(w, h) of one panel: the final image scaled to at most max_side on its long side."""
    w, h = image_size
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def upsample_nearest(grid: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """[h, w] -> [H, W] (size = (W, H)) by nearest neighbour, index for index as torch's "nearest"."""
    out_w, out_h = size
    rows = _nearest_index(grid.shape[0], out_h)
    cols = _nearest_index(grid.shape[1], out_w)
    return grid[rows][:, cols]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    scale = np.float32(n_in) / np.float32(n_out)  # float32, as ATen computes it
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def cell_to_px(value: int, cells: int, pixels: int) -> int:
    """Pixel edge of cell edge `value` of a level `cells` wide, on a panel `pixels` wide."""
    return round(value * pixels / cells)


def tile_geometry_px(record: TileRecord, size: Tuple[int, int]):
    """(tile boxes, global cells) of a record in panel pixels: (x0, y0, x1, y1), end exclusive."""
    w, h = size
    grid = record.grid

    def box(y0, x0, y1, x1):
        return (cell_to_px(x0, grid.w, w), cell_to_px(y0, grid.h, h), cell_to_px(x1, grid.w, w),
                cell_to_px(y1, grid.h, h))

    tiles = [box(*b) for b in record.tile_boxes()]
    cells = [box(y, x, y + 1, x + 1) for y, x in record.global_cells()]
    return tiles, cells


def overlay_mask(record: OverlayRecord, size: Tuple[int, int]) -> np.ndarray:
    """The overlay's mask (latent size) upsampled to a panel: [H, W] bool."""
    return upsample_nearest(record.overlay.mask.numpy().astype(bool), size)


# ---- rendering -----------------------------------------------------------------------------------
def render(recorder: Optional[MapRecorder], image: Image.Image, label: str) -> List[MapImage]:
    """Every map of the pass, in the module's documented order; [] when nothing was recorded.

    image: the final image the maps are drawn over; label: which pass and image ("hires pass,
    first image of 2"), added to every caption.
    """
    if recorder is None or recorder.empty:
        return []
    base = image.convert("RGB")
    out: List[MapImage] = []
    for name in recorder.overlay_names():
        out.append(overlay_strip(recorder, name, base, label))
    for level in recorder.tiled_levels():
        out.append(tile_map(recorder, level, base, label))
    if _has_rewrite(recorder):
        out.append(budget_chart(recorder, label))
    for m in out:
        m.image.info[INFO_KEY] = m.caption
    return out


def _rewriting_methods(recorder: MapRecorder) -> List[str]:
    """Titles of the enabled per-layer methods (the ones a budget chart is about)."""
    return [m.title for m in methods.all_methods() if m.plan is not None and m.block(recorder.settings).enabled]


def _has_rewrite(recorder: MapRecorder) -> bool:
    return bool(_rewriting_methods(recorder))


def overlay_strip(recorder: MapRecorder, name: str, base: Image.Image, label: str) -> MapImage:
    records = recorder.overlay_records(name)
    size = panel_size(base.size)
    first = records[0].overlay
    caption = f"Sloth {methods.get(name).short} map - {label}: {first.legend}; {first.tag}"
    panels = []
    for r in records:
        panel = _overlay_panel(r, base.resize(size, Image.BILINEAR))
        heat, mask = r.overlay.heat, r.overlay.mask
        _tag(panel, f"step {r.step + 1}/{recorder.total}: {float(heat.min()):.2f}-"
                    f"{float(heat.max()):.2f}, {float(mask.float().mean()) * 100:.0f}% {r.overlay.marked}")
        panels.append(panel)
    return MapImage(caption, _with_header(_row(panels), caption))


def _overlay_panel(record: OverlayRecord, base: Image.Image) -> Image.Image:
    size = base.size
    received = record.overlay.heat.numpy().astype(np.float32)
    low, high = float(received.min()), float(received.max())
    # stretched min..max (printed on the panel): received attention averages 1 and often varies little
    heat = _heat(upsample_nearest((received - low) / max(high - low, 1e-6), size))  # [H, W, 3] uint8
    pixels = np.asarray(base, dtype=np.float32) * 0.45 + heat.astype(np.float32) * 0.55
    mask = overlay_mask(record, size)
    pixels[mask] = pixels[mask] * 0.65 + np.array(MASK, np.float32) * 0.35
    edge = mask & ~_eroded(mask)
    pixels[edge] = MASK
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _heat(values: np.ndarray) -> np.ndarray:
    """0..1 -> black, red, yellow, white."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def _eroded(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1, mode="edge")
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def tile_map(recorder: MapRecorder, level: int, base: Image.Image, label: str) -> MapImage:
    records = recorder.tile_records(level)
    method = records[0].layout.title
    grid = records[0].grid
    caption = (f"Sloth {method} tiles - {label}: level {level} ({grid.h}x{grid.w} cells); "
               "tiles with this step's seams (yellow), global sample (cyan)")
    size = panel_size(base.size)
    peak_step = recorder.tile_steps(recorder.total)[0]
    panels = []
    for r in records:
        panel = base.resize(size, Image.BILINEAR)
        _draw_tiles(panel, r)
        when = " (peak)" if recorder.tile_peak_time is not None and r.step == peak_step else ""
        ratio = f"global {r.global_ratio:.2f}" if r.layout.global_keys() else "no global"
        _tag(panel, f"step {r.step + 1}/{recorder.total}{when}: tile {r.tile_size}, {ratio}")
        panels.append(panel)
    return MapImage(caption, _with_header(_row(panels), caption))


def _draw_tiles(panel: Image.Image, record: TileRecord) -> None:
    dark = Image.new("RGB", panel.size, (0, 0, 0))
    panel.paste(Image.blend(panel, dark, 0.25))
    draw = ImageDraw.Draw(panel)
    tiles, cells = tile_geometry_px(record, panel.size)
    for x0, y0, x1, y1 in cells:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r = max(1.5, min(x1 - x0, y1 - y0) * 0.3)
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=GLOBAL, outline=(0, 0, 0))
    width = max(2, min(panel.size) // 160)
    for x0, y0, x1, y1 in tiles:  # a dark rim under the yellow keeps the seams visible on any image
        draw.rectangle([x0 + width, y0 + width, x1 - 1 - width, y1 - 1 - width], outline=(0, 0, 0), width=1)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=TILE, width=width)


def budget_chart(recorder: MapRecorder, label: str) -> MapImage:
    caption = (f"Sloth K/V budget - {label}: keys per query, % of the unpatched layer, per level and step "
               f"({', '.join(_rewriting_methods(recorder))})")
    plot_w, plot_h = CHART_SIZE
    margin_l, margin_b, margin_t = 48, 30, 12
    img = Image.new("RGB", (margin_l + plot_w + 16 + LEGEND_W, margin_t + plot_h + margin_b), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(12)
    total = max(recorder.total, 1)

    def px(step: float, share: float) -> Tuple[float, float]:
        x = margin_l + (step / max(total - 1, 1)) * plot_w if total > 1 else margin_l + plot_w / 2
        return x, margin_t + (1 - share) * plot_h

    for pct in (0, 25, 50, 75, 100):
        _, y = px(0, pct / 100)
        draw.line([(margin_l, y), (margin_l + plot_w, y)], fill=(60, 60, 66))
        draw.text((4, y - 7), f"{pct}%", fill=TEXT, font=font)
    for s in sorted({0, total - 1, (total - 1) // 2}):
        x, _ = px(s, 0)
        draw.text((x - 6, margin_t + plot_h + 8), str(s + 1), fill=TEXT, font=font)
    draw.text((4, margin_t + plot_h + 8), "step", fill=TEXT, font=font)  # left of every tick, never among them

    legend_y = margin_t
    levels = recorder.levels()
    all_series = [recorder.budget_series(key) for key in levels]
    for i, key in enumerate(levels):
        series = all_series[i]
        # a series equal to later ones is drawn wider underneath them, so every level stays visible
        hidden_by = sum(1 for later in all_series[i + 1:] if later == series)
        known = [(s, v) for s, v in enumerate(series) if v is not None]
        alone = bool(known) and all(v == 1.0 for _, v in known)
        colour = ALONE if alone else LINES[i % len(LINES)]
        points = [px(s, min(max(v, 0.0), 1.0)) for s, v in known]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        elif points:
            draw.line(points, fill=colour, width=1 if alone else 2 + 3 * hidden_by)
        h, w = recorder.grids[key]
        name = f"{BLOCK_SHORT.get(key[0], key[0])} L{key[1]} {h}x{w}" + (" left alone" if alone else "")
        lx = margin_l + plot_w + 16
        draw.line([(lx, legend_y + 7), (lx + 18, legend_y + 7)], fill=colour, width=2)
        draw.text((lx + 24, legend_y), name, fill=TEXT, font=font)
        legend_y += 16
    return MapImage(caption, _with_header(img, caption))


# ---- layout helpers ------------------------------------------------------------------------------
def _row(panels: Sequence[Image.Image]) -> Image.Image:
    w = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    h = max(p.height for p in panels)
    out = Image.new("RGB", (w, h), BACKGROUND)
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + GAP
    return out


def _with_header(body: Image.Image, caption: str) -> Image.Image:
    out = Image.new("RGB", (body.width, body.height + HEADER), BACKGROUND)
    out.paste(body, (0, HEADER))
    draw = ImageDraw.Draw(out)
    font = _font(13)
    lines = _wrap(draw, caption, font, body.width - 12)[:2]
    for i, line in enumerate(lines):
        draw.text((6, 5 + 17 * i), line, fill=TEXT, font=font)
    return out


def _tag(panel: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(panel)
    font = _font(12)
    x0, y0, x1, y1 = draw.textbbox((4, 4), text, font=font)
    draw.rectangle([x0 - 3, y0 - 3, x1 + 3, y1 + 3], fill=(0, 0, 0))
    draw.text((4, 4), text, fill=TEXT, font=font)


def _wrap(draw, text: str, font, width: int) -> List[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:  # A1111 pins Pillow 9.5: the fixed bitmap font
        return ImageFont.load_default()


def _num(value: float) -> str:
    return f"{value:g}"


def pass_label(pass_name: str, batch_size: int, n_iter: int = 1) -> str:
    """"hires pass, first of 4 images": which pass and which image the maps show."""
    images = batch_size * n_iter
    return pass_name if images <= 1 else f"{pass_name}, first of {images} images"
