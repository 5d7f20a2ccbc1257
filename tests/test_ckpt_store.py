"""CheckpointStore: atomic saves, pointers, retention, cleanup; metadata contents."""

from __future__ import annotations

import errno
import json
import os
import threading
from dataclasses import asdict

import pytest
import torch

from ckpt_factory import (
    dead_pid,
    make_f5app_checkpoint,
    make_temp_leftover,
    read_json,
    tiny_model_config,
    tiny_vocab,
)
from f5app.ckpt import layout, store as store_module
from f5app.ckpt.metadata import build_metadata, model_config_diff, read_metadata
from f5app.ckpt.store import CheckpointSaveError, CheckpointStore, load_training_state
from f5app.ckpt.validate import sha256_of

MODEL, VOCAB = tiny_model_config(), tiny_vocab()


def _metadata(update: int, run_name: str = "run") -> dict:
    return build_metadata(
        config={"run_name": run_name, "optim": {"lr": 1e-3}},
        hydra={"overrides": {"task": ["model=tiny"]}, "choices": {"model": "tiny", "ckpt": "auto"}, "job": {"name": "train"}},
        update=update, epoch=1, samples_seen=update * 8, metrics={"train_loss": 0.5, "val_loss": 0.7},
        world_size=2, precision="bf16", model=asdict(MODEL), vocab_size=len(VOCAB),
        lineage={"mode": "finetune", "resumed_from": None, "finetuned_from": {"source": "pretrained", "path": "x"}},
        run_name=run_name,
    )


def _payloads(value: float = 1.0) -> dict:
    return {"model.pt": {"model_state_dict": {"w": torch.full((4,), value)}}, "vocab.txt": "".join(f"{t}\n" for t in VOCAB)}


def test_save_writes_files_metadata_last_and_pointers(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=3)
    folder = store.save(_payloads(), _metadata(100), val_loss=0.7)

    assert folder == tmp_path / "update_00000100"
    metadata = read_metadata(folder)
    for name in ("model.pt", "vocab.txt"):
        assert metadata["files"][name] == {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
    assert (folder / "vocab.txt").read_text(encoding="utf-8") == "".join(f"{t}\n" for t in VOCAB)
    assert read_json(tmp_path / "last.json")["name"] == "update_00000100"
    assert read_json(tmp_path / "best.json") | {"updated_at": None} == {
        "name": "update_00000100", "update": 100, "val_loss": 0.7, "updated_at": None,
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_metadata_records_everything_issue_3_asks_for(tmp_path):
    folder = CheckpointStore(tmp_path, keep_last=3).save(_payloads(), _metadata(300, run_name="voice"))
    metadata = read_metadata(folder)

    assert metadata["schema_version"] == 1 and metadata["format"] == "f5app-checkpoint"
    assert metadata["id"].startswith("voice/update_00000300/") and len(metadata["id"].rsplit("/", 1)[1]) == 8
    assert metadata["created_at"].endswith("+00:00")
    assert (metadata["update"], metadata["epoch"], metadata["samples_seen"]) == (300, 1, 2400)
    assert metadata["metrics"] == {"train_loss": 0.5, "val_loss": 0.7}
    assert metadata["config"]["optim"]["lr"] == 1e-3
    assert metadata["hydra"]["overrides"]["task"] == ["model=tiny"] and metadata["hydra"]["choices"]["ckpt"] == "auto"
    assert (metadata["world_size"], metadata["precision"]) == (2, "bf16")
    assert metadata["model"]["arch"]["dim"] == 64 and metadata["vocab_size"] == len(VOCAB)
    assert metadata["lineage"]["mode"] == "finetune"
    assert metadata["versions"]["f5-tts"] == "1.1.22" and metadata["versions"]["torch"]
    assert {"python", "f5-tts", "accelerate", "hydra-core", "f5app"} <= set(metadata["versions"])
    assert metadata["git_commit"] is None or len(metadata["git_commit"]) == 40


def test_two_metadata_ids_for_the_same_update_differ():
    assert _metadata(5)["id"] != _metadata(5)["id"]


def test_model_config_diff_lists_architecture_changes_only():
    old = asdict(MODEL)
    new = asdict(tiny_model_config(dim=128, checkpoint_activations=True))
    new["name"] = "renamed"
    assert model_config_diff(old, new) == ["arch.dim: checkpoint 64, config 128"]
    assert model_config_diff(old, asdict(MODEL)) == []


@pytest.mark.parametrize("failing_errno", [errno.ENOSPC, errno.EACCES])
def test_failed_save_leaves_nothing_visible_and_previous_intact(tmp_path, monkeypatch, failing_errno):
    store = CheckpointStore(tmp_path, keep_last=3)
    previous = store.save(_payloads(1.0), _metadata(100), val_loss=0.5)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_write = store_module._write_file
    calls = []

    def write_then_fail(path, payload):
        calls.append(path.name)
        if len(calls) == 2:  # the first file is on disk, the second fails
            raise OSError(failing_errno, os.strerror(failing_errno))
        return real_write(path, payload)

    monkeypatch.setattr(store_module, "_write_file", write_then_fail)
    with pytest.raises(CheckpointSaveError) as raised:
        store.save(_payloads(2.0), _metadata(200), val_loss=0.1)

    assert "update_00000200" in str(raised.value) and "\n" not in str(raised.value)
    assert ("no space left" in str(raised.value)) == (failing_errno == errno.ENOSPC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "last.json", "update_00000100"]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert read_json(tmp_path / "last.json")["name"] == read_json(tmp_path / "best.json")["name"] == "update_00000100"


def test_failure_while_renaming_into_place_leaves_nothing_visible(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, keep_last=3)
    store.save(_payloads(), _metadata(100))
    real_rename = os.rename

    def rename_fails_for_checkpoints(src, dst):
        if str(src).startswith(str(tmp_path / ".tmp-")):
            raise OSError(errno.EIO, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", rename_fails_for_checkpoints)
    with pytest.raises(CheckpointSaveError):
        store.save(_payloads(), _metadata(200))
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000100"]
    assert layout.scan(tmp_path).temporary == []


def test_retention_keeps_newest_and_best_and_deletes_the_rest(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    losses = {100: 0.9, 200: 0.2, 300: 0.5, 400: 0.6, 500: 0.7}
    for update, loss in losses.items():
        store.save(_payloads(), _metadata(update), val_loss=loss)

    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000500", "update_00000400", "update_00000200"]
    assert read_json(tmp_path / "best.json")["name"] == "update_00000200"
    assert not any(p.name.startswith(layout.DELETING_PREFIX) for p in tmp_path.iterdir())


def test_best_pointer_moves_only_when_val_loss_improves(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_payloads(), _metadata(100), val_loss=0.5)
    store.save(_payloads(), _metadata(200), val_loss=0.6)
    store.save(_payloads(), _metadata(300))  # no validation this time
    assert read_json(tmp_path / "best.json")["name"] == "update_00000100"
    store.save(_payloads(), _metadata(400), val_loss=0.4)
    assert read_json(tmp_path / "best.json")["name"] == "update_00000400"
    assert read_json(tmp_path / "last.json")["name"] == "update_00000400"


def test_set_best_points_at_an_existing_checkpoint_and_refuses_others(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_payloads(), _metadata(100), val_loss=0.5)
    store.save(_payloads(), _metadata(200), val_loss=0.4)
    store.set_best("update_00000100", 0.3)
    assert read_json(tmp_path / "best.json")["name"] == "update_00000100"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        store.set_best("update_00000999", 0.1)


def test_prune_applies_retention_on_demand(tmp_path):
    for update in (100, 200, 300, 400):
        CheckpointStore(tmp_path, keep_last=10).save(_payloads(), _metadata(update), val_loss=update / 100)
    deleted = CheckpointStore(tmp_path, keep_last=1).prune()
    assert sorted(p.name for p in deleted) == ["update_00000200", "update_00000300"]
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000400", "update_00000100"]


def test_cleanup_partials_removes_dead_writers_temp_folders_only(tmp_path):
    CheckpointStore(tmp_path, keep_last=3).save(_payloads(), _metadata(100))
    dead = make_temp_leftover(tmp_path, 200, dead_pid(), MODEL, VOCAB)
    alive = make_temp_leftover(tmp_path, 300, os.getppid(), MODEL, VOCAB)
    half_deleted = tmp_path / f"{layout.DELETING_PREFIX}update_00000050-1"
    half_deleted.mkdir()

    removed = CheckpointStore(tmp_path, keep_last=3).cleanup_partials()

    assert sorted(p.name for p in removed) == sorted([dead.name, half_deleted.name])
    assert alive.exists() and (tmp_path / "update_00000100" / "metadata.json").exists()


def test_saving_an_existing_update_sets_the_old_one_aside(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_payloads(1.0), _metadata(100))
    store.save(_payloads(2.0), _metadata(100))
    assert (tmp_path / "update_00000100.superseded-1" / "model.pt").exists()
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000100"]


def test_saves_from_a_background_thread_complete(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=10)
    errors = []

    def save(update):
        try:
            store.save(_payloads(), _metadata(update), val_loss=1.0 / update)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=save, args=(u,)) for u in (100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000300", "update_00000200", "update_00000100"]
    assert read_json(tmp_path / "best.json")["name"] == "update_00000300"


def test_load_training_state_reads_every_rank_and_tolerates_a_missing_one(tmp_path):
    import numpy as np

    folder = make_f5app_checkpoint(tmp_path, 100, MODEL, VOCAB, world_size=2)
    state = load_training_state(folder, rank=1)
    assert state["training_state"]["update"] == 100 and state["training_state"]["world_size"] == 2
    assert set(state["model"]) >= {"model_state_dict", "ema_model_state_dict"}
    assert state["rng_state"] is not None and "torch" in state["rng_state"]
    assert load_training_state(folder, rank=5)["rng_state"] is None

    # numpy's RNG state (an ndarray) is allowed in the RNG file, and only there
    torch.save({"numpy": np.random.get_state()}, folder / layout.rng_state_filename(3))
    assert load_training_state(folder, rank=3)["rng_state"]["numpy"][0] == "MT19937"


def test_pointers_are_replaced_atomically_and_damaged_pointers_read_as_absent(tmp_path):
    layout.write_pointer(tmp_path, "last", "update_00000100", 100, None)
    assert layout.read_pointer(tmp_path, "last").name == "update_00000100"
    (tmp_path / "best.json").write_text("{not json")
    assert layout.read_pointer(tmp_path, "best") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert json.loads((tmp_path / "last.json").read_text())["update"] == 100


_WRITER = """
import sys, torch
from f5app.ckpt.store import CheckpointStore
store = CheckpointStore(sys.argv[1], keep_last=2)
update = 0
while True:
    update += 1
    payload = {"model.pt": {"model_state_dict": {"w": torch.full((4_000_000,), float(update))}}, "vocab.txt": " \\na\\n"}
    store.save(payload, {"update": update, "format": "f5app-checkpoint"}, val_loss=1.0 / update)
    print(update, flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_saves_leaves_only_complete_checkpoints(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few saves done, the next one is being written
            assert writer.stdout.readline().strip(), "writer died early"
        time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    found = layout.scan(tmp_path)
    assert found.complete and not found.incomplete
    for entry in found.complete:  # every visible checkpoint is whole: recorded hashes match, data is right
        metadata = read_metadata(entry.path)
        for name, info in metadata["files"].items():
            assert sha256_of(entry.path / name) == info["sha256"], (entry.name, name)
        weights = torch.load(entry.path / "model.pt", weights_only=True)["model_state_dict"]["w"]
        assert bool((weights == float(entry.update)).all())
    assert layout.read_pointer(tmp_path, "last").name in {e.name for e in found.complete}
    CheckpointStore(tmp_path, keep_last=2).cleanup_partials()
    assert layout.scan(tmp_path).temporary == []
