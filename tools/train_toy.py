"""Train the toy model shipped in models/: the UNet + text encoder, or the yardstick's judge.

    python tools/train_toy.py unet   [--out models/toy-unet.safetensors] [--stop-at STEP]
    python tools/train_toy.py judge  [--out models/toy-judge.safetensors]

Sized for the hour on 2 idle cores: the shipped run took 49 min on two torch threads, ~10 min
of 16 x 16 steps (0.36 s each) and ~37 min of 32 x 32 steps (0.95 s each); the judge ~12 min on one. The shipped weights'
logs are docs/toy/train-*.log. --stop-at N gives the first N steps of the same run (same
schedule), saved at step N.

The UNet runs on two torch threads, the judge on one, with fixed seeds; the data is drawn from lib_sloth.toy.scenes
(nothing downloaded). Seeds: UNet training scenes 0 (fresh scenes every step from one
generator), judge training scenes 1; the yardstick's held-out reference scenes use seed 2 and
its prompts seed 3, so no image the UNet or the judge saw is used to score it.

The UNet is trained in two phases on the same architecture: first on the scenes averaged down
to 16 x 16 (the convolutions and attention are size-agnostic, and the 16 x 16 phase costs a
quarter of the 32 x 32 one: it learns colours, shapes and relations cheaply), then at 32 x 32
(textures, outlines); a checkpoint every 50 steps. Loss: eps MSE with Min-SNR-5 weighting, uniform timesteps on SD's
scaled-linear schedule, 10 % of prompts dropped to "" (classifier-free guidance's uncond).
The shipped weights are the EMA of the parameters.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lib_sloth.bench_cases import sdp_attention  # noqa: E402
from lib_sloth.toy import judge as judge_mod  # noqa: E402
from lib_sloth.toy import model as toy  # noqa: E402
from lib_sloth.toy import scenes  # noqa: E402
from lib_sloth.toy.sampling import sd_alphas_cumprod  # noqa: E402

UNET_SEED = 0
JUDGE_SEED = 1
PHASES = ((16, 1600), (32, 2300))  # (image side, steps)
BATCH = 16
LR = 5e-4
WARMUP = 100
EMA_DECAY = 0.998
PROMPT_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0
UNET_THREADS = 2


def train_unet(out: str, log, stop_at: int = 0) -> None:
    """Train; stop_at > 0 stops after that many steps of the same schedule (a prefix of the full run)."""
    torch.manual_seed(UNET_SEED)
    unet, text = toy.build()
    params = list(unet.parameters()) + list(text.parameters())
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    acp = sd_alphas_cumprod().float()
    snr = acp / (1 - acp)
    data = torch.Generator().manual_seed(UNET_SEED)
    total = sum(steps for _, steps in PHASES)
    step, start = 0, time.time()
    with sdp_attention():
        for side, steps in PHASES:
            for _ in range(steps):
                lr = LR * min(1.0, (step + 1) / WARMUP) * (0.55 + 0.45 * math.cos(math.pi * step / total))
                for group in opt.param_groups:
                    group["lr"] = lr
                prompts = scenes.random_prompts(BATCH, data)
                x0 = scenes.render(prompts, data)
                if side != scenes.SIZE:
                    x0 = F.avg_pool2d(x0, scenes.SIZE // side)
                words = [p.words() if float(torch.rand(1, generator=data)) >= PROMPT_DROPOUT else ""
                         for p in prompts]
                t = torch.randint(0, len(acp), (BATCH,), generator=data)
                eps = torch.randn(x0.shape, generator=data)
                a = acp[t].view(-1, 1, 1, 1)
                xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
                pred = unet(xt, t, text.encode(words))
                weight = snr[t].clamp(max=MIN_SNR_GAMMA) / snr[t]
                loss = (weight * (pred - eps).pow(2).mean(dim=(1, 2, 3))).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                decay = min(EMA_DECAY, (1 + step) / (10 + step))
                with torch.no_grad():
                    for live, avg in zip((unet, text), ema):
                        for p, q in zip(live.parameters(), avg.parameters()):
                            q.lerp_(p, 1 - decay)
                step += 1
                if step % 25 == 0 or step == total:
                    log(f"step {step}/{total} side {side} loss {loss.item():.4f} lr {lr:.2e} "
                        f"elapsed {time.time() - start:.0f}s")
                if step % 50 == 0 or step == total or step == stop_at:
                    toy.save(out, *ema, {"steps": step, "seed": UNET_SEED})  # no wall clock: same run, same bytes
                if step == stop_at:
                    break
            if step == stop_at:
                break
    total = step
    log(f"done: {total} steps in {time.time() - start:.0f}s -> {out} sha256 {toy.sha256(out)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("unet", "judge"))
    parser.add_argument("--out")
    parser.add_argument("--stop-at", type=int, default=0, help="UNet: stop after this many steps (0 = all)")
    args = parser.parse_args(argv)
    # the UNet trains on both cores of the reference machine (2 threads: same bytes run to run on
    # one CPU model; another thread count or vector ISA changes the last bits); the judge on one
    torch.set_num_threads(UNET_THREADS if args.part == "unet" else 1)
    torch.use_deterministic_algorithms(True)

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    if args.part == "unet":
        train_unet(args.out or toy.WEIGHTS, log, args.stop_at)
    else:
        judge_mod.train(args.out or judge_mod.WEIGHTS, JUDGE_SEED, log)


if __name__ == "__main__":
    main()
