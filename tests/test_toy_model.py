"""The toy model shipped in models/: its weights, its architecture, and sampling it with Sloth."""
import importlib.util
import json
import os

import pytest
import torch

from lib_sloth.presets import preset
from lib_sloth.settings import settings_from_dict
from lib_sloth.toy import judge, model as toy
from lib_sloth.toy.sampling import generate

PROMPTS = ["red circle left of blue square on stripes", "white cross above green triangle on checks"]
SEEDS = [11, 12]
STEPS = 3


def shipped_sha256() -> dict:
    """File name -> sha256, from models/SHA256SUMS (sha256sum's format)."""
    with open(os.path.join(toy.ROOT, "models", "SHA256SUMS"), encoding="utf-8") as f:
        return {name.strip().lstrip("*"): digest for digest, name in (line.split(maxsplit=1) for line in f if line.strip())}


@pytest.fixture(scope="module")
def shipped():
    return toy.load()


def plain(shipped, settings=None):
    unet, text = shipped
    images, _ = generate(unet, text, PROMPTS, SEEDS, steps=STEPS, cfg_scale=4.0, settings=settings)
    return images


def test_shipped_weights_match_their_sha256():
    sums = shipped_sha256()
    assert set(sums) == {"toy-unet.safetensors", "toy-judge.safetensors"}
    assert toy.sha256(toy.WEIGHTS) == sums["toy-unet.safetensors"]
    assert toy.sha256(judge.WEIGHTS) == sums["toy-judge.safetensors"]


def test_saving_the_shipped_model_writes_the_shipped_bytes(shipped, tmp_path):
    """The shipped file is exactly what toy.save writes for its tensors and metadata (fp16 -> fp32 ->
    fp16 is exact), and save is deterministic: a retrained run that ends with the same tensors
    ends with the same sha256."""
    from safetensors import safe_open

    with safe_open(toy.WEIGHTS, "pt") as f:
        meta = json.loads(f.metadata()["toy"])
    assert meta["unet_config"] == toy.UNET_CONFIG and tuple(meta["vocab"]) == toy.VOCAB
    out = str(tmp_path / "resaved.safetensors")
    toy.save(out, *shipped, {k: meta[k] for k in ("steps", "seed")})
    assert toy.sha256(out) == shipped_sha256()["toy-unet.safetensors"]


def test_training_is_deterministic_run_to_run(tmp_path):
    """Two runs of the first training steps (tools/train_toy.py unet --stop-at 2, in this process,
    its thread count and deterministic-algorithms switch restored) write the same bytes."""
    spec = importlib.util.spec_from_file_location("train_toy", os.path.join(toy.ROOT, "tools", "train_toy.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    digests = []
    try:
        torch.set_num_threads(train.UNET_THREADS)
        torch.use_deterministic_algorithms(True)
        for run in range(2):
            out = str(tmp_path / f"run{run}.safetensors")
            train.train_unet(out, lambda message: None, stop_at=2)
            digests.append(toy.sha256(out))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)
    assert digests[0] == digests[1]


def test_weights_fit_the_size_budget():
    assert os.path.getsize(toy.WEIGHTS) + os.path.getsize(judge.WEIGHTS) <= 20 * 2 ** 20


def test_weights_load_into_the_real_ldm_unet_with_sd15_layout(shipped):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet, _ = shipped
    assert type(unet) is UNetModel  # load() loads strictly: every tensor has its place
    assert unet.num_res_blocks == [2, 2, 2, 2] and len(unet.input_blocks) == 12 and len(unet.output_blocks) == 12
    tokens = []
    hooks = [m.attn1.register_forward_pre_hook(lambda mod, args: tokens.append(args[0].shape[1]))
             for m in unet.modules() if hasattr(m, "attn1")]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 3, 32, 32), torch.tensor([500]), torch.zeros(1, toy.CONTEXT_TOKENS, 64))
    finally:
        for h in hooks:
            h.remove()
    # two input and three output transformers per attention level, one in the middle block
    assert sorted(set(tokens), reverse=True) == [32 * 32, 16 * 16, 8 * 8, 4 * 4]
    assert [tokens.count(n) for n in (1024, 256, 64, 16)] == [5, 5, 5, 1]


def test_plain_samples_are_bit_identical_run_to_run(shipped):
    assert torch.equal(plain(shipped), plain(shipped))


@pytest.mark.parametrize("neutral", [
    {},  # Sloth on, no method ticked
    {"slothful": {"enabled": True, "input": {"slothful": 1}, "output": {"slothful": 1}}},
    {"sag": {"enabled": True, "scale": 0}},
    {"agentsd": {"enabled": True, "early": {"ratio": 0}, "late": {"ratio": 0}}},
], ids=["nothing ticked", "slothful strength 1", "sag scale 0", "agentsd ratio 0"])
def test_neutral_sloth_settings_are_bit_identical_to_plain(shipped, neutral):
    assert torch.equal(plain(shipped, settings_from_dict(neutral)), plain(shipped))


def test_the_off_preset_is_bit_identical_to_plain(shipped):
    assert torch.equal(plain(shipped, preset("off")), plain(shipped))


def test_tokenizer_pads_and_refuses_unknown_words():
    tokens = toy.tokenize(["", "red circle above blue cross on dots"])
    assert tokens[0].tolist() == [0] * toy.CONTEXT_TOKENS
    assert tokens[1, 7] == 0 and tokens[1, :7].ne(0).all()
    with pytest.raises(ValueError):
        toy.tokenize(["purple circle"])
