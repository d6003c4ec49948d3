"""The quality table: every configuration of `configs.table()` sampled from the same prompts and
noise, scored by the yardstick, deltas against plain with paired standard errors.

    python -m lib_sloth.toy.table [--n 500] [--only NAME ...] [--shard I/K] [--cache PATH] [--merge PATH ...]
                                  [--rescore]

Each finished configuration's images (uint8) and per-image scores go to --cache (a torch file)
as soon as it is done, so an interrupted run resumes where it stopped, and --rescore scores the
cached images again (a changed judge or yardstick needs no new sampling). --shard I/K runs every K-th configuration
from the I-th, so K processes share the work; a last run with --merge over their caches writes
the table (a shard without plain only fills its cache). Time per image is the wall clock of that
configuration's sampling in this process (one torch thread unless SLOTH_TORCH_THREADS says
otherwise), so rows of one run compare; rows of runs on other machines or loads do not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import torch

from . import configs, judge as judge_mod, model as toy, scenes, yardstick
from .sampling import generate, to_uint8

FIRST_SEED = 1000
REAL_SEED = 4  # real scenes drawn for the eval prompts: the ceiling row


def run_config(config: configs.Config, unet, text, judge, prompts, seeds) -> Dict:
    words = [p.words() for p in prompts]
    with configs.seeded(config, seeds[0])(unet):
        images, seconds = generate(unet, text, words, seeds, steps=config.steps, cfg_scale=config.cfg_scale,
                                   settings=config.settings)
    return {**scored(judge, images, prompts), "images": to_uint8(images), "seconds": seconds}


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of sampling.to_uint8 (up to its rounding): the cached images back in [-1, 1]."""
    return images.float() / 127.5 - 1


def scored(judge, images: torch.Tensor, prompts) -> Dict:
    s = yardstick.score(judge, images, prompts)
    return {"correct": s.correct, "attributes": s.attributes, "features": s.features}


def real_row(judge, prompts) -> Dict:
    images = scenes.render(prompts, torch.Generator().manual_seed(REAL_SEED))
    s = yardstick.score(judge, images, prompts)
    return {"correct": s.correct, "attributes": s.attributes, "features": s.features, "seconds": 0.0}


def summarise(results: Dict[str, Dict], ref: yardstick.Reference, order: List[str]) -> List[Dict]:
    """One dict per row: absolute scores, and deltas vs plain with paired SEs (not for real data)."""
    base = results["plain"]
    rows = []
    for name in order:
        r = results[name]
        row = {"name": name, "group": r.get("group", ""), "n": len(r["correct"]),
               "adherence": float(r["correct"].double().mean()), "attributes": float(r["attributes"].mean()),
               "fd": yardstick.frechet(r["features"], ref), "seconds_per_image": r["seconds"]}
        if name not in ("plain", "real held-out scenes"):
            for key, delta in (("adherence", yardstick.paired(r["correct"], base["correct"])),
                               ("attributes", yardstick.paired(r["attributes"], base["attributes"])),
                               ("fd", yardstick.frechet_delta(r["features"], base["features"], ref))):
                row[f"d_{key}"], row[f"se_{key}"] = delta.value, delta.se
        rows.append(row)
    return rows


def markdown(rows: List[Dict], command: str) -> str:
    head = ("| configuration | group | adherence | Δ vs plain (± SE) | attributes | Δ (± SE) | FD | Δ FD (± SE) "
            "| s / image |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        def delta(key, scale=1.0, digits=1):
            if f"d_{key}" not in r:
                return ""
            return f"{r[f'd_{key}'] * scale:+.{digits}f} ± {r[f'se_{key}'] * scale:.{digits}f}"

        secs = f"{r['seconds_per_image']:.2f}" if r["seconds_per_image"] else ""
        lines.append(f"| {r['name']} | {r['group']} | {100 * r['adherence']:.1f} % | {delta('adherence', 100)} "
                     f"| {100 * r['attributes']:.1f} % | {delta('attributes', 100)} | {r['fd']:.2f} | "
                     f"{delta('fd', 1, 2)} | {secs} |")
    return f"`{command}` (n = {rows[0]['n']} per row)\n\n" + head + "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="The toy model's quality table.")
    parser.add_argument("--n", type=int, default=500, help="samples per configuration (paired: same prompts, noise)")
    parser.add_argument("--only", nargs="*", help="configuration names (plain is always kept)")
    parser.add_argument("--validation", action="store_true", help="only plain and the degradations")
    parser.add_argument("--shard", default="0/1", help="I/K: run configurations I, I+K, I+2K, ... (and plain)")
    parser.add_argument("--cache", default="quality-cache.pt")
    parser.add_argument("--merge", nargs="*", default=[], help="other shards' caches to read")
    parser.add_argument("--made-by", help="the command named over the table (default: this one)")
    parser.add_argument("--rescore", action="store_true", help="score the cached images again, sample nothing new")
    parser.add_argument("--markdown", default=os.path.join("docs", "toy", "quality.md"))
    parser.add_argument("--json", default=os.path.join("docs", "toy", "quality.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("SLOTH_TORCH_THREADS", "1")))
    command = args.made_by or "python -m lib_sloth.toy.table " + " ".join(sys.argv[1:] if argv is None else argv)

    unet, text = toy.load()
    judge = judge_mod.load()
    ref = yardstick.reference(judge)
    prompts = yardstick.eval_prompts(args.n)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.n))
    wanted = configs.validation() if args.validation else configs.table()
    if args.only:
        wanted = [c for c in wanted if c.name == "plain" or c.name in args.only]
    shard, shards = (int(v) for v in args.shard.split("/"))
    wanted = [c for i, c in enumerate(wanted) if i % shards == shard]
    cache = torch.load(args.cache) if os.path.exists(args.cache) else {}
    if cache.get("n") != args.n:
        cache = {"n": args.n, "results": {}}
    results = cache["results"]
    for path in args.merge:
        other = torch.load(path)
        if other.get("n") == args.n:
            results.update({k: v for k, v in other["results"].items() if k not in results})
    if args.rescore:
        results.pop("real held-out scenes", None)
        for r in results.values():
            if "images" in r:
                r.update(scored(judge, from_uint8(r["images"]), prompts))
    results.setdefault("real held-out scenes", {**real_row(judge, prompts), "group": "ceiling"})
    for config in wanted:
        if config.name not in results:
            start = time.time()
            results[config.name] = {**run_config(config, unet, text, judge, prompts, seeds), "group": config.group}
            torch.save(cache, args.cache)
            print(f"{config.name}: adherence {results[config.name]['correct'].double().mean():.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)
    if "plain" not in results:
        print("no plain row in this cache: merge it with the shard that ran plain to write the table")
        return 0
    order = ["real held-out scenes"] + [c.name for c in configs.table() if c.name in results]
    rows = summarise(results, ref, order)
    text_md = markdown(rows, command)
    print(text_md)
    for path, content in ((args.markdown, text_md), (args.json, json.dumps(rows, indent=1))):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
