"""The benchmark's machinery on a tiny real UNet: every case runs, the report has the documented form."""
import json

import torch
from ldm.modules.attention import CrossAttention

from lib_sloth import bench
from unets import sd15_unet


def test_every_case_runs_and_reports_ratio_and_memory():
    unet = sd15_unet(model_channels=32)
    cases = bench.default_cases()
    names = [c.name for c in cases]
    assert names[0] == "unpatched" and {"slothful", "nearsighted tile", "nearsighted attention",
                                        "tomesd 0.5", "agentsd early", "agentsd late"} <= set(names)
    original = CrossAttention.forward
    results = bench.run([256], 1, cases, torch.device("cpu"), torch.float32, log=lambda s: None, unet=unet)
    results += bench.run([256], 1, bench.sag_cases(), torch.device("cpu"), torch.float32, log=lambda s: None,
                         unet=unet)
    assert CrossAttention.forward is original  # the benchmark's own SDPA forward and every patch are undone
    assert not any(type(m).__name__ == "ToMeBlock" for m in unet.modules())
    by_name = {r["name"]: r for r in results}
    assert by_name["unpatched"]["ratio_vs_baseline"] == 1.0 and by_name["cfg step"]["ratio_vs_baseline"] == 1.0
    for r in results:
        assert set(r) >= {"name", "size", "median_s", "ratio_vs_baseline", "peak_mem_mb"} and r["median_s"] > 0
    assert by_name["cfg step + SAG"]["sag_map_mb"] > 0
    json.dumps(results)


def test_sag_map_formula_matches_the_recorded_map():
    unet = sd15_unet(model_channels=32)
    results = bench.run([256], 1, bench.sag_cases(), torch.device("cpu"), torch.float32, log=lambda s: None,
                        unet=unet)
    measured = next(r["sag_map_mb"] for r in results if r["name"] == "cfg step + SAG")
    assert measured == round(bench.sag_map_mb(unet, 256), 3) > 0


def test_maps_cases_record_and_compare_against_maps_off():
    unet = sd15_unet(model_channels=32)
    for group in bench.maps_cases():
        off, on = group
        assert off.name.startswith("maps off") and on.name.startswith("maps on")
        results = bench.run([256], 1, group, torch.device("cpu"), torch.float32, log=lambda s: None, unet=unet)
        assert [r["name"] for r in results] == [off.name, on.name] and results[0]["ratio_vs_baseline"] == 1.0
    patches = []
    original = bench.SlothPatch.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        patches.append(self)

    bench.SlothPatch.__init__ = init
    try:
        with torch.no_grad():
            x = torch.randn(2, 4, 64, 64)  # level 0 is 64x64: Near-sighted Attention tiles it
            t, ctx = torch.tensor([500, 500]), torch.randn(2, 77, 768)
            for group in bench.maps_cases():
                for case in group:
                    with case.enter(unet) as handle:
                        case.run(unet, x, t, ctx, handle)
    finally:
        bench.SlothPatch.__init__ = original
    recorders = [p.recorder for p in patches]
    assert [r is not None for r in recorders] == [False, True, False, True]
    assert recorders[1].tiles and recorders[3].sag_records()  # what "maps on" paid for was recorded
