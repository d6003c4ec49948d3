"""Appending rows to a model call's conditioning (the batched perturbed pass of PAG / SEG)."""
import pytest
import torch

from lib_sloth.webui.batch_rows import NotBatchable, appended, try_appended


def test_a1111_and_sdxl_condition_dicts_get_the_rows_appended():
    c = torch.arange(3.0).reshape(3, 1, 1)
    cond = {"c_crossattn": [c], "c_concat": [c * 10]}
    out = appended(cond, [0], 3)
    assert out["c_crossattn"][0].flatten().tolist() == [0.0, 1.0, 2.0, 0.0]
    assert out["c_concat"][0].flatten().tolist() == [0.0, 10.0, 20.0, 0.0]
    sdxl = {"crossattn": c, "vector": c[:, 0], "c_concat": [c]}
    assert appended(sdxl, [2, 1], 3)["vector"].flatten().tolist() == [0.0, 1.0, 2.0, 2.0, 1.0]


def test_options_pass_through_and_the_input_is_not_changed():
    c = torch.zeros(2, 4)
    options = {"cond_or_uncond": [0, 1], "sigmas": "kept"}
    cond = {"c_crossattn": c, "transformer_options": options}
    out = appended(cond, [0], 2)
    assert out["transformer_options"] == options and out["c_crossattn"].shape == (3, 4) and c.shape == (2, 4)


def test_one_value_for_every_row_is_kept():
    sigmas = torch.tensor([3.0])
    out = appended({"c_crossattn": torch.zeros(2, 3), "transformer_options": {"sigmas": sigmas}}, [0], 2)
    assert out["transformer_options"]["sigmas"] is sigmas and out["c_crossattn"].shape == (3, 3)


def test_a_tensor_of_another_batch_is_refused_naming_its_shape():
    with pytest.raises(NotBatchable, match=r"shape \(4, 7\) in a call of 2 rows"):
        appended({"c_crossattn": torch.zeros(2, 3), "control": {"output": [torch.zeros(4, 7)]}}, [0], 2)
    assert try_appended(torch.zeros(4, 7), [0], 2) is None
