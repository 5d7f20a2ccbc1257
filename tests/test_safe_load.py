"""The fast structure reader sees what torch sees, and never calls anything a file names."""

from __future__ import annotations

import torch
from ckpt_factory import fake_cfm_state_dict, make_code_running_pickle, tiny_model_config

from f5app.safe_load import TensorShape, read_structure


def test_it_reads_the_same_keys_and_shapes_as_torch(tmp_path):
    state = fake_cfm_state_dict(tiny_model_config(), 12)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3, 4))])
    optimizer.step()
    path = tmp_path / "model.pt"
    torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(), "update": 7,
                "flags": torch.ones(2, dtype=torch.bool)}, path)

    peeked = read_structure(path)
    loaded = torch.load(path, weights_only=True)
    assert peeked["update"] == 7
    assert {k: v.shape for k, v in peeked["model_state_dict"].items()} == {k: tuple(v.shape) for k, v in loaded["model_state_dict"].items()}
    assert peeked["flags"] == TensorShape((2,), "bool")
    assert next(iter(peeked["model_state_dict"].values())).dtype == "float"


def test_a_pickle_that_would_run_code_is_left_to_torch_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = make_code_running_pickle(tmp_path / "evil.pt", marker)
    assert read_structure(path) is None
    assert not marker.exists()


def test_anything_but_a_torch_zip_is_left_to_torch(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert read_structure(legacy) is None and read_structure(garbage) is None
