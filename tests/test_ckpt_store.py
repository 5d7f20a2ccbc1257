"""CheckpointStore: atomic saves, pointers, retention, cleanup; metadata contents."""

from __future__ import annotations

import errno
import json
import os
import hashlib
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import xxhash

from ckpt_factory import (
    dead_pid,
    make_f5app_checkpoint,
    make_temp_leftover,
    read_json,
    tiny_model_config,
    tiny_vocab,
)
from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt import layout, schema, store as store_module
from f5app.ckpt.arch import model_config_diff
from f5app.ckpt.schema import read_metadata
from f5app.ckpt.store import CheckpointSaveError, CheckpointStore

MODEL, VOCAB = tiny_model_config(), tiny_vocab()


def _metadata(update: int, run_name: str = "run", val_loss: float | None = 0.7, eval_scores=None) -> schema.CheckpointMetadata:
    """A record as the trainer builds one (same constructors)."""
    return schema.new_metadata(
        run_name=run_name, update=update, epoch=1, samples_seen=update * 8,
        metrics=schema.Metrics(train_loss=0.5, val_loss=val_loss, eval=eval_scores),
        world_size=2, precision="bf16", model=asdict(MODEL), vocab_size=len(VOCAB),
        config={"run_name": run_name, "optim": {"lr": 1e-3}},
        hydra=schema.HydraRecord(overrides=("model=tiny",), choices={"model": "tiny", "ckpt": "auto"}),
        lineage=schema.Lineage("finetune", finetuned_from=schema.CheckpointRef(source="pretrained", path="x")),
    )


def _checkpoint(update: int, value: float = 1.0, val_loss: float | None = None, **metadata) -> schema.Checkpoint:
    progress = schema.Progress(update=update)
    return schema.Checkpoint(
        _metadata(update, val_loss=val_loss, **metadata), {"model_state_dict": {"w": torch.full((4,), value)}},
        schema.TrainingState(progress, world_size=1), [{"torch": torch.get_rng_state()}], list(VOCAB),
    )


def test_save_writes_files_metadata_last_and_pointers(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=3)
    folder = store.save(_checkpoint(100, val_loss=0.7))

    assert folder == tmp_path / "update_00000100"
    metadata = read_metadata(folder)
    for name in ("model.pt", "vocab.txt", "training_state.pt", "rng_state_0.pt"):
        data = (folder / name).read_bytes()
        assert metadata.files[name] == schema.FileRecord(len(data), hashlib.sha256(data).hexdigest(), xxhash.xxh3_128(data).hexdigest())
    assert (folder / "vocab.txt").read_text(encoding="utf-8") == "".join(f"{t}\n" for t in VOCAB)
    assert read_json(tmp_path / "last.json")["name"] == "update_00000100"
    assert read_json(tmp_path / "best.json") | {"updated_at": None} == {
        "name": "update_00000100", "update": 100, "val_loss": 0.7, "updated_at": None, "metric": "val_loss", "value": 0.7,
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_metadata_records_everything_issue_3_asks_for(tmp_path):
    folder = CheckpointStore(tmp_path, keep_last=3).save(_checkpoint(300, val_loss=0.7, run_name="voice"))
    metadata = read_metadata(folder)
    raw = read_json(folder / "metadata.json")

    assert raw["schema_version"] == schema.SCHEMA_VERSION and raw["format"] == "f5app-checkpoint"
    assert metadata.id.startswith("voice/update_00000300/") and len(metadata.id.rsplit("/", 1)[1]) == 8
    assert metadata.created_at.endswith("+00:00")
    assert (metadata.update, metadata.epoch, metadata.samples_seen) == (300, 1, 2400)
    assert (metadata.metrics.train_loss, metadata.metrics.val_loss) == (0.5, 0.7)
    assert metadata.config["optim"]["lr"] == 1e-3
    assert metadata.hydra.overrides == ("model=tiny",) and metadata.hydra.choices["ckpt"] == "auto"
    assert raw["hydra"]["overrides"] == ["model=tiny"]  # the layout ckpt info prints
    assert (metadata.world_size, metadata.precision) == (2, "bf16")
    assert metadata.model["arch"]["dim"] == 64 and metadata.vocab_size == len(VOCAB)
    assert metadata.lineage.mode == "finetune" and metadata.lineage.finetuned_from.source == "pretrained"
    assert set(raw["lineage"]) == {"mode", "resumed_from", "finetuned_from"}
    assert metadata.versions["f5-tts"] == "1.1.22" and metadata.versions["torch"]
    assert {"python", "f5-tts", "accelerate", "hydra-core", "f5app"} <= set(metadata.versions)
    assert metadata.git_commit is None or len(metadata.git_commit) == 40


def test_two_metadata_ids_for_the_same_update_differ():
    assert _metadata(5).id != _metadata(5).id


def test_model_config_diff_lists_architecture_changes_only():
    old = asdict(MODEL)
    new = asdict(tiny_model_config(dim=128, checkpoint_activations=True))
    new["name"] = "renamed"
    assert model_config_diff(old, new) == ["arch.dim: checkpoint 64, config 128"]
    assert model_config_diff(old, asdict(MODEL)) == []


@pytest.mark.parametrize("failing_errno", [errno.ENOSPC, errno.EACCES])
def test_failed_save_leaves_nothing_visible_and_previous_intact(tmp_path, monkeypatch, failing_errno):
    store = CheckpointStore(tmp_path, keep_last=3)
    previous = store.save(_checkpoint(100, 1.0, val_loss=0.5))
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_write = store_module._write_file
    calls = []

    def write_then_fail(path, payload):  # noqa: ANN001
        calls.append(path.name)
        if len(calls) == 2:  # the first file is on disk, the second fails
            raise OSError(failing_errno, os.strerror(failing_errno))
        return real_write(path, payload)

    monkeypatch.setattr(store_module, "_write_file", write_then_fail)
    with pytest.raises(CheckpointSaveError) as raised:
        store.save(_checkpoint(200, 2.0, val_loss=0.1))

    assert "update_00000200" in str(raised.value) and "\n" not in str(raised.value)
    assert ("no space left" in str(raised.value)) == (failing_errno == errno.ENOSPC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "last.json", "update_00000100"]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert read_json(tmp_path / "last.json")["name"] == read_json(tmp_path / "best.json")["name"] == "update_00000100"


def test_failure_while_renaming_into_place_leaves_nothing_visible(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, keep_last=3)
    store.save(_checkpoint(100, val_loss=None))
    real_rename = os.rename

    def rename_fails_for_checkpoints(src, dst):
        if str(src).startswith(str(tmp_path / ".tmp-")):
            raise OSError(errno.EIO, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(store_module.os, "rename", rename_fails_for_checkpoints)
    with pytest.raises(CheckpointSaveError):
        store.save(_checkpoint(200, val_loss=None))
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000100"]
    assert layout.scan(tmp_path).temporary == []


def test_retention_keeps_newest_and_best_and_deletes_the_rest(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    losses = {100: 0.9, 200: 0.2, 300: 0.5, 400: 0.6, 500: 0.7}
    for update, loss in losses.items():
        store.save(_checkpoint(update, val_loss=loss))

    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000500", "update_00000400", "update_00000200"]
    assert read_json(tmp_path / "best.json")["name"] == "update_00000200"
    assert not any(p.name.startswith(layout.DELETING_PREFIX) for p in tmp_path.iterdir())


def test_best_pointer_moves_only_when_val_loss_improves(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_checkpoint(100, val_loss=0.5))
    store.save(_checkpoint(200, val_loss=0.6))
    store.save(_checkpoint(300, val_loss=None))  # no validation this time
    assert read_json(tmp_path / "best.json")["name"] == "update_00000100"
    store.save(_checkpoint(400, val_loss=0.4))
    assert read_json(tmp_path / "best.json")["name"] == "update_00000400"
    assert read_json(tmp_path / "last.json")["name"] == "update_00000400"


def test_best_by_another_metric_follows_its_direction_and_records_it(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5, best_metric="sim")
    store.save(_checkpoint(100, val_loss=0.5, eval_scores=schema.EvalScores(wer=0.4, sim=0.61)))
    store.save(_checkpoint(200, val_loss=0.4, eval_scores=schema.EvalScores(wer=0.2, sim=0.55)))
    best = read_json(tmp_path / "best.json")
    assert (best["name"], best["metric"], best["value"]) == ("update_00000100", "sim", 0.61)

    by_wer = CheckpointStore(tmp_path, keep_last=5, best_metric="wer")
    by_wer.save(_checkpoint(300, val_loss=0.9, eval_scores=schema.EvalScores(wer=0.3, sim=0.5)))
    best = read_json(tmp_path / "best.json")  # the pointer named another metric: re-ranked by wer
    assert (best["name"], best["metric"], best["value"]) == ("update_00000200", "wer", 0.2)


def test_prune_applies_retention_on_demand(tmp_path):
    for update in (100, 200, 300, 400):
        CheckpointStore(tmp_path, keep_last=10).save(_checkpoint(update, val_loss=update / 100))
    deleted = CheckpointStore(tmp_path, keep_last=1).prune()
    assert sorted(p.name for p in deleted) == ["update_00000200", "update_00000300"]
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000400", "update_00000100"]


def test_cleanup_partials_removes_dead_writers_temp_folders_only(tmp_path):
    CheckpointStore(tmp_path, keep_last=3).save(_checkpoint(100, val_loss=None))
    dead = make_temp_leftover(tmp_path, 200, dead_pid(), MODEL, VOCAB)
    alive = make_temp_leftover(tmp_path, 300, os.getppid(), MODEL, VOCAB)
    half_deleted = tmp_path / f"{layout.DELETING_PREFIX}update_00000050-1"
    half_deleted.mkdir()

    removed = CheckpointStore(tmp_path, keep_last=3).cleanup_partials()

    assert sorted(p.name for p in removed) == sorted([dead.name, half_deleted.name])
    assert alive.exists() and (tmp_path / "update_00000100" / "metadata.json").exists()


def test_saving_an_existing_update_sets_the_old_one_aside(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_checkpoint(100, 1.0, val_loss=None))
    store.save(_checkpoint(100, 2.0, val_loss=None))
    assert (tmp_path / "update_00000100.superseded-1" / "model.pt").exists()
    assert [e.name for e in layout.scan(tmp_path).complete] == ["update_00000100"]


def test_a_best_pointer_never_keeps_its_old_value_over_new_weights(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_checkpoint(100, 1.0, val_loss=0.2))
    store.save(_checkpoint(200, 1.0, val_loss=0.6))
    store.save(_checkpoint(100, 2.0, val_loss=0.9))  # a second training reaches update 100 again

    best = read_json(tmp_path / "best.json")
    assert (best["name"], best["value"]) == ("update_00000200", 0.6)  # re-ranked over what is there now
    assert read_metadata(tmp_path / best["name"]).metrics.val_loss == best["value"]


def test_saves_from_a_background_thread_complete(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=10)
    errors = []

    def save(update):
        try:
            store.save(_checkpoint(update, val_loss=1.0 / update))
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


def test_load_checkpoint_reads_every_rank_and_tolerates_a_missing_one(tmp_path):
    import numpy as np

    folder = make_f5app_checkpoint(tmp_path, 100, MODEL, VOCAB, world_size=2)
    loaded = CheckpointReader(folder).resume_state(rank=1)
    assert loaded.training_state.progress.update == 100 and loaded.training_state.world_size == 2
    assert loaded.model is not None and loaded.ema is not None and loaded.optimizer is not None
    assert loaded.rng is not None and "torch" in loaded.rng
    assert CheckpointReader(folder).resume_state(rank=5).rng is None

    # numpy's RNG state (an ndarray) is allowed in the RNG file, and only there
    torch.save({"numpy": np.random.get_state()}, folder / schema.rng_state_filename(3))
    assert CheckpointReader(folder).resume_state(rank=3).rng["numpy"][0] == "MT19937"


def test_pointers_are_replaced_atomically_and_damaged_pointers_read_as_absent(tmp_path):
    layout.write_pointer(tmp_path, "last", "update_00000100", 100, None)
    assert layout.read_pointer(tmp_path, "last").name == "update_00000100"
    (tmp_path / "best.json").write_text("{not json")
    assert layout.read_pointer(tmp_path, "best") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert json.loads((tmp_path / "last.json").read_text())["update"] == 100


_WRITER = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_ckpt_store import _checkpoint
from f5app.ckpt.store import CheckpointStore
store = CheckpointStore(sys.argv[1], keep_last=2)
update = 0
while True:
    update += 1
    checkpoint = _checkpoint(update, val_loss=1.0 / update)
    checkpoint.weights["model_state_dict"]["w"] = torch.full((4_000_000,), float(update))
    store.save(checkpoint)
    print(update, flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_saves_leaves_only_complete_checkpoints(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
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
        for name, record in metadata.files.items():
            assert hashlib.sha256((entry.path / name).read_bytes()).hexdigest() == record.sha256, (entry.name, name)
        weights = torch.load(entry.path / "model.pt", weights_only=True)["model_state_dict"]["w"]
        assert bool((weights == float(entry.update)).all())
    assert layout.read_pointer(tmp_path, "last").name in {e.name for e in found.complete}
    CheckpointStore(tmp_path, keep_last=2).cleanup_partials()
    assert layout.scan(tmp_path).temporary == []


def test_prune_by_another_store_while_saves_are_in_flight_never_breaks_a_save(tmp_path):
    """CheckpointStore.prune() called directly (another instance, another thread) waits for the save in flight."""
    ckpt_dir = tmp_path / "checkpoints"
    saver, pruner = CheckpointStore(ckpt_dir, keep_last=1), CheckpointStore(ckpt_dir, keep_last=1)
    errors: list[BaseException] = []
    done = threading.Event()

    def prune_until_done():
        while not done.is_set():
            try:
                pruner.prune()
            except BaseException as error:  # noqa: BLE001 - every failure is the finding
                errors.append(error)

    thread = threading.Thread(target=prune_until_done)
    thread.start()
    try:
        for update in range(1, 7):
            saver.save(_checkpoint(update, val_loss=None))
    finally:
        done.set()
        thread.join()
    assert errors == []
    assert [entry.name for entry in layout.scan(ckpt_dir).complete] == ["update_00000006"]
    assert not layout.scan(ckpt_dir).deleting
