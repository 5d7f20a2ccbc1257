"""Files other people shared cannot steer the store, and damage is damage wherever it is found.

Each test builds its hostile or damaged files here (nothing is committed) and names the defect of
issue 11 it pins down.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from ckpt_factory import make_f5app_checkpoint, tiny_model_config, tiny_vocab
from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt import layout, schema
from f5app.ckpt.resolve import ResolutionError, resolve, resolve_and_load
from f5app.ckpt.validate import validate
from f5app.config import CkptConfig

MODEL, VOCAB = tiny_model_config(), tiny_vocab()
INFER = CkptConfig(infer_chain=["best", "last", "latest"])
TRAIN = CkptConfig(train_chain=["resume"])


@pytest.fixture
def run(tmp_path):
    run_dir = tmp_path / "runs" / "voice"
    for update, loss in ((100, 0.9), (200, 0.5)):
        make_f5app_checkpoint(run_dir / "checkpoints", update, MODEL, VOCAB, loss)
    return run_dir


def point(run_dir: Path, which: str, data) -> None:
    (run_dir / "checkpoints" / f"{which}.json").write_text(json.dumps(data))


# --- 1: pointer names escape the run ------------------------------------------------------


@pytest.mark.parametrize("name", ["../../outside", "/abs/victim", ".", "..", "update_00000200/../../x", "update_1"])
def test_a_pointer_naming_anything_but_a_checkpoint_of_this_run_is_ignored_and_renames_nothing(run, tmp_path, name):
    victim = tmp_path / "outside"
    victim.mkdir()
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    point(run, "best", {"name": name, "update": 300, "val_loss": 0.1})
    point(run, "last", {"name": name, "update": 300, "val_loss": 0.1})

    resolution = resolve(INFER, purpose="infer", run_dir=run, model=None)

    assert resolution.chosen.path.name == "update_00000200"  # latest still works
    assert [c.status for c in resolution.candidates[:2]] == ["missing", "missing"]
    assert "damaged" in resolution.candidates[0].reason
    assert victim.is_dir() and not list(tmp_path.glob("*.corrupted*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("content", ["[]", "null", "3", '{"name": 5}', '{"name": "update_00000200", "update": "x"}'])
def test_a_pointer_of_the_wrong_shape_is_one_reason_not_a_traceback(run, content):
    (run / "checkpoints" / "best.json").write_text(content)
    resolution = resolve(INFER, purpose="infer", run_dir=run, model=None)
    assert resolution.candidates[0].status == "missing" and "best.json is damaged" in resolution.candidates[0].reason


def test_quarantine_renames_only_checkpoint_folders(tmp_path):
    stranger = tmp_path / "checkpoints"
    stranger.mkdir()
    with pytest.raises(ValueError, match="only checkpoint folders"):
        layout.quarantine(stranger, "test")
    assert stranger.is_dir()


# --- 3: file names in metadata.json escape the folder -------------------------------------


@pytest.mark.parametrize("name", ["../../secret.txt", "/etc/hostname", "sub/model.pt", ".."])
def test_metadata_naming_files_outside_the_checkpoint_is_damage_and_nothing_outside_is_read(run, tmp_path, name, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    folder = run / "checkpoints" / "update_00000200"
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"][name] = {"size": 7, "sha256": "0" * 64}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])

    result = validate(folder, model=None, vocab_size=None, full=True)

    assert not result.ok and "not a file of this folder" in result.reason
    assert str(secret) not in opened


def test_a_files_entry_of_the_wrong_type_is_a_rejected_candidate(run):
    folder = run / "checkpoints" / "update_00000200"
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"]["model.pt"] = 5
    (folder / "metadata.json").write_text(json.dumps(metadata))
    resolution = resolve(INFER, purpose="infer", run_dir=run, model=None)
    assert resolution.chosen.path.name == "update_00000100"
    assert any(c.status == "quarantined" and "no valid size" in c.reason for c in resolution.candidates)


# --- 8: one changed byte is damage, found before training starts --------------------------


def flip_last_byte_of_entry(path: Path, entry_suffix: str) -> None:
    """Change one byte inside a zip entry's data (same size), leaving the container readable."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry_suffix))
    data = bytearray(path.read_bytes())
    (name_len, extra_len) = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size - 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_changed_byte_in_training_state_is_quarantined_during_resolution(run):
    target = run / "checkpoints" / "update_00000200" / "training_state.pt"
    size = target.stat().st_size
    flip_last_byte_of_entry(target, "data.pkl")
    assert target.stat().st_size == size

    resolution = resolve(TRAIN, purpose="train", run_dir=run, model=MODEL)

    assert resolution.mode == "resume" and resolution.chosen.path.name == "update_00000100"
    (quarantined,) = [c for c in resolution.candidates if c.status == "quarantined"]
    assert "training_state.pt" in quarantined.reason and "CRC-32" in quarantined.reason


def test_a_flipped_bit_in_vocab_txt_is_damage_not_a_unicode_traceback(run):
    vocab = run / "checkpoints" / "update_00000200" / "vocab.txt"
    vocab.write_bytes(b"\xff" + vocab.read_bytes()[1:])
    resolution = resolve(TRAIN, purpose="train", run_dir=run, model=MODEL)
    assert resolution.chosen.path.name == "update_00000100"
    assert any(c.status == "quarantined" and "vocab.txt is damaged" in c.reason for c in resolution.candidates)


# --- 9: verify on load --------------------------------------------------------------------


def corrupt_tensor_bytes(folder: Path, value: float) -> None:
    """Overwrite one weight of model.pt in place (same size): the fast checks read no tensor bytes."""
    path = folder / "model.pt"
    weights = torch.load(path, weights_only=True)
    marker = weights["model_state_dict"]["transformer.proj_out.bias"]
    data = bytearray(path.read_bytes())
    needle = marker[:4].numpy().tobytes()
    at = data.find(needle)
    assert at > 0
    data[at:at + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("value", [1234.5, float("nan")])
def test_damage_the_fast_checks_cannot_see_is_found_while_loading_and_the_next_one_is_used(run, value):
    newest = run / "checkpoints" / "update_00000200"
    corrupt_tensor_bytes(newest, value)
    assert resolve(TRAIN, purpose="train", run_dir=run, model=MODEL, dry_run=True).chosen.path == newest  # invisible to fast checks

    resolution, loaded = resolve_and_load(TRAIN, purpose="train", run_dir=run, model=MODEL,
                                          load=lambda chosen: CheckpointReader(chosen.path).resume_state(rank=0))

    assert resolution.chosen.path.name == "update_00000100" and loaded.training_state.progress.update == 100
    (quarantined,) = [c for c in resolution.candidates if c.status == "quarantined"]
    assert "found while loading" in quarantined.reason and "changed since it was saved" in quarantined.reason
    assert (run / "checkpoints" / "update_00000200.corrupted").is_dir()


def test_the_store_records_a_fast_checksum_beside_sha256_and_loading_compares_it(run):
    folder = run / "checkpoints" / "update_00000200"
    recorded = schema.read_metadata(folder).files
    assert recorded and all(r.sha256 and r.xxh3_128 for r in recorded.values())
    corrupt_tensor_bytes(folder, 1234.5)
    with pytest.raises(schema.DamagedCheckpoint, match=r"model\.pt changed since it was saved \(xxh3_128 "):
        CheckpointReader(folder).resume_state(rank=0)


def test_a_checkpoint_saved_before_the_fast_checksum_is_verified_with_its_sha256(run):
    folder = run / "checkpoints" / "update_00000200"
    metadata = json.loads((folder / "metadata.json").read_text())
    for record in metadata["files"].values():
        del record["xxh3_128"]  # what f5app wrote before it recorded one
    (folder / "metadata.json").write_text(json.dumps(metadata))
    assert CheckpointReader(folder).resume_state(rank=0).training_state.progress.update == 200
    corrupt_tensor_bytes(folder, 1234.5)
    with pytest.raises(schema.DamagedCheckpoint, match=r"model\.pt changed since it was saved \(sha256 "):
        CheckpointReader(folder).resume_state(rank=0)


def test_full_validation_checks_both_recorded_digests(run):
    folder = run / "checkpoints" / "update_00000200"
    assert validate(folder, model=None, vocab_size=None, full=True).ok
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"]["model.pt"]["xxh3_128"] = "0" * 32
    (folder / "metadata.json").write_text(json.dumps(metadata))
    result = validate(folder, model=None, vocab_size=None, full=True)
    assert not result.ok and "model.pt: xxh3_128 " in result.reason


def test_damage_found_while_loading_someone_elses_file_is_refused_not_renamed(run):
    source = run / "checkpoints" / "update_00000200"
    corrupt_tensor_bytes(source, 99.0)
    custom = CkptConfig(name="custom", path=str(source), train_chain=["custom"])
    with pytest.raises(ResolutionError, match="changed since it was saved"):
        resolve_and_load(custom, purpose="train", run_dir=run.parent / "other", model=MODEL,
                         load=lambda chosen: CheckpointReader(chosen.path).resume_state(rank=0))
    assert source.is_dir()


# --- 11/12: what the store keeps and points at --------------------------------------------


def test_non_finite_weights_are_never_written(tmp_path):
    from ckpt_factory import checkpoint_record
    from f5app.ckpt.store import CheckpointSaveError, CheckpointStore

    record = checkpoint_record(100, MODEL, VOCAB, 0.5)
    next(iter(record.weights["model_state_dict"].values()))[0] = float("nan")
    with pytest.raises(CheckpointSaveError, match="non-finite weights"):
        CheckpointStore(tmp_path, keep_last=3).save(record)
    assert not any(tmp_path.iterdir())


def test_a_nan_first_validation_never_pins_best_and_retention_keeps_the_real_best(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    make_f5app_checkpoint(ckpt_dir, 100, MODEL, VOCAB, float("nan"), keep_last=2)
    for update, loss in ((200, 0.5), (300, 0.9), (400, 0.8), (500, 0.7)):
        make_f5app_checkpoint(ckpt_dir, update, MODEL, VOCAB, loss, keep_last=2)

    best = layout.read_pointer(ckpt_dir, "best")
    assert (best.name, best.value) == ("update_00000200", 0.5)
    assert (ckpt_dir / "update_00000200").is_dir()


def test_retention_never_deletes_the_newest_healthy_checkpoint_for_diverged_ones(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    make_f5app_checkpoint(ckpt_dir, 100, MODEL, VOCAB, 0.5, keep_last=2)
    for update in (200, 300, 400):
        make_f5app_checkpoint(ckpt_dir, update, MODEL, VOCAB, float("nan"), keep_last=2)
    assert {e.name for e in layout.scan(ckpt_dir).complete} == {"update_00000100", "update_00000300", "update_00000400"}
