"""The benchmark's machinery on a tiny real UNet: every case runs, the report has the documented
form, the ceiling really frees self-attention and is undone, the CUDA and profile code paths run."""
import json
import time

import pytest
import torch
from ldm.modules.attention import CrossAttention

from lib_sloth import bench, bench_profile
from lib_sloth.layers import find_self_attention
from unets import sd15_unet, unet_inputs

CPU = torch.device("cpu")


def quiet(_):
    pass


@pytest.fixture(scope="module")
def unet():
    return sd15_unet(model_channels=32)


def test_every_case_runs_and_reports_ratio_share_and_memory(unet):
    cases = bench.default_cases()
    names = [c.name for c in cases]
    assert names[0] == "unpatched" and names[-1] == "unpatched (repeat)"
    assert {"ceiling (attn1 free)", "slothful", "nearsighted tile", "nearsighted attention", "tomesd 0.4",
            "tomesd 0.5", "agentsd early", "agentsd late"} <= set(names)
    original = CrossAttention.forward
    results = bench.run([256], 1, cases, CPU, torch.float32, log=quiet, unet=unet)
    results += bench.run([256], 1, bench.sag_cases(), CPU, torch.float32, log=quiet, unet=unet)
    assert CrossAttention.forward is original  # the benchmark's own SDPA forward and every patch are undone
    assert not any(type(m).__name__ == "ToMeBlock" for m in unet.modules())
    assert not any("forward" in m.__dict__ for m in find_self_attention(unet))  # the ceiling is undone
    by_name = {r["name"]: r for r in results}
    assert by_name["unpatched"]["ratio_vs_baseline"] == 1.0 and by_name["cfg step"]["ratio_vs_baseline"] == 1.0
    assert by_name["unpatched"]["share_of_ceiling"] == 0.0 and by_name["ceiling (attn1 free)"]["share_of_ceiling"] == 1.0
    for r in results:
        assert set(r) >= {"name", "size", "median_s", "ratio_vs_baseline", "share_of_ceiling", "peak_mem_mb"}
        assert r["median_s"] > 0 and len(r["times_s"]) == 1
    for r in results[:len(cases)]:  # the UNet group has a ceiling: every row's share follows the formula
        expected = (by_name["unpatched"]["median_s"] - r["median_s"]) / (
            by_name["unpatched"]["median_s"] - by_name["ceiling (attn1 free)"]["median_s"])
        assert r["share_of_ceiling"] == round(expected, 3)  # computed from the rounded medians it reports
    assert by_name["cfg step + SAG"]["share_of_ceiling"] is None  # the CFG-step group has no ceiling
    assert by_name["cfg step + SAG"]["sag_map_mb"] > 0
    s = bench.summary(results)
    assert s["ceiling_s"] == {"256": by_name["ceiling (attn1 free)"]["median_s"]}
    assert set(s["noise"]) == {"256", "256 cfg step"}
    noise = s["noise"]["256"]
    assert noise["baseline_s"] == by_name["unpatched"]["median_s"]
    assert noise["repeat_s"] == by_name["unpatched (repeat)"]["median_s"]
    assert noise["noise"] == round(abs(1 - noise["baseline_s"] / noise["repeat_s"]), 3)
    json.dumps({"cases": results, **s})


def test_share_of_ceiling_formula():
    assert bench.share_of_ceiling(10.0, 6.0, 2.0) == 0.5
    assert bench.share_of_ceiling(10.0, 2.0, 2.0) == 1.0
    assert bench.share_of_ceiling(10.0, 11.0, 2.0) == -0.125  # slower than the baseline: negative
    assert bench.share_of_ceiling(10.0, 6.0, None) is None
    assert bench.share_of_ceiling(10.0, 6.0, 10.0) is None  # nothing removable: no share


def test_ceiling_zeroes_every_self_attention_only_and_restores(unet):
    x, t, c = unet_inputs(unet, 2, 32, 32)
    layers = list(find_self_attention(unet))
    cross = [m.attn2 for m in unet.modules() if hasattr(m, "attn2")]
    assert layers and cross
    seen = {}
    hooks = [m.register_forward_hook(lambda m, a, o: seen.setdefault(m, []).append(o)) for m in layers + cross]
    try:
        with torch.no_grad():
            before = unet(x, t, c)
            plain_cross = {m: seen[m][-1] for m in cross}
            seen.clear()
            with bench.free_self_attention(unet):
                free = unet(x, t, c)
            free_seen = {m: list(v) for m, v in seen.items()}
            after = unet(x, t, c)
    finally:
        for h in hooks:
            h.remove()
    for m in layers:  # every attn1 call returned zeros of its input's shape
        (out,) = free_seen[m]
        assert out.shape[-1] == m.to_q.in_features and not out.any()
    # cross-attention still computes (its inputs changed upstream, so compare it is non-zero, not equal)
    assert all(free_seen[m][0].abs().sum() > 0 and plain_cross[m].shape == free_seen[m][0].shape for m in cross)
    assert not torch.equal(free, before)  # freeing attn1 changes the output: the zeros really were used
    assert torch.equal(after, before)  # and everything is back afterwards
    assert not any("forward" in m.__dict__ for m in layers)


def test_ceiling_keeps_an_existing_instance_forward_and_restores_on_error(unet):
    layer = next(iter(find_self_attention(unet)))
    own = layer.forward  # a bound method, stored on the instance the way HyperTile does

    layer.forward = own
    try:
        with pytest.raises(RuntimeError):
            with bench.free_self_attention(unet):
                assert layer.forward is not own
                raise RuntimeError("interrupted")
        assert layer.__dict__["forward"] is own
        assert not any("forward" in m.__dict__ for m in find_self_attention(unet) if m is not layer)
    finally:
        layer.__dict__.pop("forward", None)


class CudaRecorder:
    """Records the torch.cuda calls the CUDA path makes (no GPU here; the timings are not checked)."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("synchronize", "reset_peak_memory_stats"):
            monkeypatch.setattr(torch.cuda, name, lambda device=None, n=name: self.calls.append(n))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self._log("memory_allocated", 100))
        monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                            lambda device=None: self._log("max_memory_allocated", 100 + 3 * 2**20))

    def _log(self, name, value):
        self.calls.append(name)
        return value


def test_cuda_path_syncs_every_timing_reads_the_allocator_peak_and_warms_every_case(unet, monkeypatch):
    cuda = CudaRecorder(monkeypatch)
    runs = []
    cases = [bench.Case(name, bench.unpatched_case().enter,
                        lambda u, x, t, c, h, n=name: (runs.append(n), cuda.calls.append("run")))
             for name in ("a", "b", "c")]
    results = bench.run([64], 2, cases, CPU, torch.float32, log=quiet, unet=unet,
                        clock=bench.DeviceClock(CPU, cuda=True))
    assert runs == ["a", "b", "c"] + ["a", "b", "c"] + ["c", "b", "a"]  # one untimed warm-up of every case
    timed = [i for i, c in enumerate(cuda.calls) if c == "run"][3:]
    for i in timed:  # every timed run: reset peak, synchronize before and after, then read the peak
        assert cuda.calls[i - 1] == "synchronize" and cuda.calls[i + 1] == "synchronize"
        assert "reset_peak_memory_stats" in cuda.calls[i - 4:i]
        assert cuda.calls[i + 2:i + 4] == ["synchronize", "max_memory_allocated"]
    assert all(r["peak_mem_mb"] == 3.0 for r in results)


def test_device_choice(monkeypatch):
    assert bench.pick_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.pick_device("auto") == CPU
    with pytest.raises(SystemExit, match="--device cuda"):
        bench.main(["--device", "cuda", "--quick"])


def test_sag_map_formula_matches_the_recorded_map(unet):
    results = bench.run([256], 1, bench.sag_cases(), CPU, torch.float32, log=quiet, unet=unet)
    measured = next(r["sag_map_mb"] for r in results if r["name"] == "cfg step + SAG")
    assert measured == round(bench.sag_map_mb(unet, 256), 3) > 0


def test_stage_clock_charges_nested_stages_exclusively(monkeypatch):
    now = iter([0.0, 1.0, 3.0, 4.0]).__next__  # outer starts 0, inner 1..3, outer ends 4
    monkeypatch.setattr(bench_profile.time, "perf_counter", now)
    clock = bench_profile.StageClock(CPU)
    with clock.stage("outer"), clock.stage("inner"):
        pass
    assert clock.totals == {"outer": 2.0, "inner": 2.0}


def test_profile_times_the_stages_of_every_method_and_puts_every_name_back(unet):
    from lib_sloth import agentsd, nearsighted, slothful, tome
    import torch.nn.functional as F

    before = [F.scaled_dot_product_attention, slothful.reduce_tokens, nearsighted.tile, nearsighted.untile,
              agentsd.match, tome.Matching.merging]
    layer = bench_profile.first_input_layer(unet)
    hooks_before = (len(layer.to_q._forward_hooks), len(layer.to_q._forward_pre_hooks))
    report = bench_profile.profile_report(512, 1, CPU, torch.float32, unet=unet, sag_size=128)
    after = [F.scaled_dot_product_attention, slothful.reduce_tokens, nearsighted.tile, nearsighted.untile,
             agentsd.match, tome.Matching.merging]
    assert after == before
    assert (len(layer.to_q._forward_hooks), len(layer.to_q._forward_pre_hooks)) == hooks_before
    cases = report["layer"]["cases"]
    assert set(cases) == {"unpatched", "slothful", "nearsighted tile", "nearsighted attention",
                          "agentsd early", "agentsd late"}
    for name, c in cases.items():
        assert sum(c["stages_s"].values()) == pytest.approx(c["total_s"], rel=0.05, abs=1e-3)
        assert c["stages_s"]["projections"] > 0 and c["stages_s"]["sdpa"] > 0
    assert cases["slothful"]["stages_s"]["pooling"] > 0
    assert cases["nearsighted tile"]["stages_s"]["tiling copies"] > 0
    assert cases["agentsd early"]["stages_s"]["matching"] > 0 and cases["agentsd late"]["stages_s"]["merge/unmerge"] > 0
    sag = report["sag"]["cases"]
    assert set(sag["cfg step"]["stages_s"]) == {"unet call, batch 2", "other"}
    assert {"unet call, batch 2", "unet call, batch 1", "sag map capture",
            "sag mask + blur"} <= set(sag["cfg step + SAG"]["stages_s"])
    assert not any("forward" in m.__dict__ for m in unet.modules())
    json.dumps(report)


def test_attn1_attribution_times_only_self_attention_and_is_removed(unet, monkeypatch):
    """Every timed CPU run is split into attn1's projections, SDPA and the rest: the ceiling (attn1
    free) has no projection and no SDPA time although cross-attention still runs SDPA, the unpatched
    UNet has both, a rewrite's own work lands in "attn1 other"; the bound follows its formula, and
    no hook or wrapper is left behind."""
    import torch.nn.functional as F

    layers = list(find_self_attention(unet))
    sdpa = F.scaled_dot_product_attention
    names = ("unpatched", "ceiling (attn1 free)", "nearsighted tile", "unpatched (repeat)")
    cases = [c for c in bench.default_cases() if c.name in names]
    from lib_sloth import nearsighted

    untile, burned = nearsighted.untile, []

    def untile_after_known_work(*args):  # 10 ms of work inside the tiled call, not in proj/SDPA
        start = time.perf_counter()  # the clock of bench.run's default timer ("wall")
        while time.perf_counter() - start < 0.01:
            pass
        burned.append(time.perf_counter() - start)
        return untile(*args)

    monkeypatch.setattr(nearsighted, "untile", untile_after_known_work)
    results = bench.run([512], 1, cases, CPU, torch.float32, log=quiet, unet=unet)  # 64² latent: 2x2 tiles
    assert F.scaled_dot_product_attention is sdpa
    assert not any(m._forward_hooks or m._forward_pre_hooks for layer in layers
                   for m in (layer, layer.to_q, layer.to_k, layer.to_v, layer.to_out))
    by_name = {r["name"]: r for r in results}
    plain, free, tiled = by_name["unpatched"], by_name["ceiling (attn1 free)"], by_name["nearsighted tile"]
    assert free["attn1_s"]["projections"] == 0 and free["attn1_s"]["sdpa"] == 0
    assert plain["attn1_s"]["projections"] > 0 and plain["attn1_s"]["sdpa"] > 0
    # a rewrite's own work (here the known work in untile) is counted in attn1's "other", and not twice
    assert burned and sum(burned) <= tiled["attn1_s"]["attn1 other"] < tiled["median_s"] - tiled["attn1_s"]["sdpa"]
    for r in results:  # the stages are a part of the run's time
        assert 0 < sum(r["attn1_s"].values()) < r["median_s"]
        assert r["bound_ratio"] == bench.bound_ratio(plain["median_s"], free["median_s"], r["attn1_s"])
    assert free["bound_ratio"] == round(plain["median_s"] / free["median_s"], 3)
    text = bench.table(results)
    assert "| attn1 proj s | attn1 sdpa s | attn1 other s | bound |" in text.splitlines()[0]
    assert all(line.count("|") == text.splitlines()[0].count("|") for line in text.splitlines())
    off = bench.run([128], 1, cases[:1], CPU, torch.float32, log=quiet, unet=unet, attribute=False)
    assert "attn1_s" not in off[0] and "attn1 proj s" not in bench.table(off)


def test_bound_ratio_formula():
    assert bench.bound_ratio(12.0, 4.0, {"projections": 1.0, "sdpa": 1.0, "attn1 other": 5.0}) == 2.0
    assert bench.bound_ratio(12.0, None, {"projections": 1.0, "sdpa": 1.0}) is None


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
    assert recorders[1].tiles and recorders[3].overlay_records("sag")  # what "maps on" paid for was recorded


def test_guidance_cases_make_the_documented_model_calls_and_undo_everything(unet, monkeypatch):
    """PAG / SEG batched: one batch-3 UNet call; separate: a batch-2 and a batch-1 call; SAG: 2 + 1;
    SAG at a step outside its window: the plain CFG step's one call."""
    cases = bench.guidance_cases()
    assert [c.name for c in cases][0] == "cfg step" and cases[-1].role == "repeat"
    calls = []
    hook = unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    original = CrossAttention.forward
    x, t, ctx = unet_inputs(unet, 2, 32, 32)
    seen = {}
    try:
        with torch.no_grad():
            for case in cases:
                calls.clear()
                with case.enter(unet) as handle:
                    case.run(unet, x, t, ctx, handle)
                seen[case.name] = list(calls)
    finally:
        hook.remove()
    assert CrossAttention.forward is original
    assert seen == {"cfg step": [2], "cfg step + PAG (batched)": [3], "cfg step + PAG (separate)": [2, 1],
                    "cfg step + SEG (batched)": [3], "cfg step + SEG (separate)": [2, 1], "cfg step + SAG": [2, 1],
                    "cfg step + SAG, step outside its 0-0.5 window": [2], "cfg step (repeat)": [2]}
    results = bench.run([256], 1, cases, CPU, torch.float32, log=quiet, unet=unet)
    assert set(bench.summary(results)["noise"]) == {"256 cfg step"}


def test_the_diffusers_substrate_runs_the_same_cases_and_puts_everything_back():
    pytest.importorskip("diffusers")
    import diffusers_unets as du

    from lib_sloth.diffusers import bench_cases as diffusers_cases

    unet = du.unet(du.sd15_config(cross_attention_dim=768))
    before = dict(unet.attn_processors)
    cases = diffusers_cases.default_cases()
    assert [c.name for c in cases] == [c.name for c in bench.default_cases()]
    results = bench.run([256], 1, cases, CPU, torch.float32, log=quiet, unet=unet, substrate="diffusers")
    results += bench.run([256], 1, diffusers_cases.sag_cases(), CPU, torch.float32, log=quiet, unet=unet,
                         substrate="diffusers")
    assert dict(unet.attn_processors) == before  # the ceiling, every method and SAG are undone
    assert not any(type(m).__name__ == "ToMeBlock" for m in unet.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules())
    by_name = {r["name"]: r for r in results}
    assert by_name["ceiling (attn1 free)"]["share_of_ceiling"] == 1.0 and by_name["unpatched"]["ratio_vs_baseline"] == 1.0
    assert all(r["median_s"] > 0 and "attn1_s" not in r for r in results)
    assert by_name["cfg step + SAG"]["median_s"] > by_name["cfg step"]["median_s"]  # one more UNet call
    assert bench.sag_map_mb(unet, 1024, diffusers_cases.find_self_attention) == bench.sag_map_mb(
        sd15_unet(model_channels=32), 1024)  # same heads and tokens as the ldm twin


def test_the_free_processor_zeroes_self_attention_only(unet):
    pytest.importorskip("diffusers")
    import diffusers_unets as du

    from lib_sloth.diffusers import bench_cases as diffusers_cases

    model = du.unet(du.sd15_config())
    attn1 = model.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    attn2 = model.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    x = torch.randn(1, 64, 32)
    with torch.no_grad(), diffusers_cases.free_self_attention(model):
        assert torch.equal(attn1(x), torch.zeros_like(x))
        assert attn2(x, encoder_hidden_states=torch.randn(1, 8, du.CONTEXT)).abs().max() > 0
    assert type(attn1.processor).__name__ == "AttnProcessor2_0"
