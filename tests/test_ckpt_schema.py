"""The checkpoint format has one owner: what the writer writes, the reader reads, and the first
release's checkpoints (schema 1) still read everywhere a checkpoint is read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ckpt_factory import checkpoint_record, make_f5app_checkpoint, tiny_model_config, tiny_vocab
from f5app.ckpt import schema
from f5app.ckpt_cli import main as ckpt_main
from f5app.ckpt.resolve import resolve
from f5app.ckpt.store import CheckpointStore
from f5app.ckpt.validate import validate
from f5app.config import CkptConfig
from legacy_layout import write_schema1_checkpoint

MODEL, VOCAB = tiny_model_config(), tiny_vocab()


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as every other JSON reader does."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_what_the_writer_writes_the_reader_reads_back_field_for_field(tmp_path):
    lineage = schema.Lineage("resume", schema.CheckpointRef("resume", "/r/update_00000002", "r/update_00000002/ab", 2),
                             schema.CheckpointRef("pretrained", "/hub/model.safetensors"))
    scores = schema.EvalScores(wer=0.25, cer=0.1, sim=0.6, num_prompts=4, models={"asr": "tiny.en"})
    folder = make_f5app_checkpoint(tmp_path, 4, MODEL, VOCAB, 1.5, lineage=lineage, eval_scores=scores, overrides=("optim.lr=1e-3",))

    written = schema.read_metadata(folder)
    assert written.lineage == lineage and written.metrics.eval == scores
    assert written.hydra.overrides == ("run_name=test", "optim.lr=1e-3")
    assert set(written.files) == {"model.pt", "training_state.pt", "vocab.txt", "rng_state_0.pt"}
    assert schema.CheckpointMetadata.from_dict(written.to_dict()) == written


def test_non_finite_numbers_are_written_as_null_and_named(tmp_path):
    folder = make_f5app_checkpoint(tmp_path, 2, MODEL, VOCAB, float("nan"))

    raw = strict_json((folder / "metadata.json").read_text())  # no bare NaN in the file
    assert raw["metrics"]["val_loss"] is None and "val_loss" in raw["metrics"]["nonfinite"]
    metadata = schema.read_metadata(folder)
    assert metadata.metrics.value("val_loss") is None and metadata.metrics.not_finite() == ("best_val_loss", "val_loss")
    assert not (tmp_path / "best.json").exists()  # a NaN is never best


def test_a_metadata_file_too_large_to_be_ours_is_refused_before_parsing(tmp_path):
    folder = make_f5app_checkpoint(tmp_path, 2, MODEL, VOCAB, 1.0)
    (folder / "metadata.json").write_text('{"pad": "' + "x" * (schema.MAX_METADATA_BYTES + 1) + '"}')
    result = validate(folder, model=None, vocab_size=None)
    assert not result.ok and "over the" in result.reason


# --- the first release's layout --------------------------------------------------------------


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "runs" / "old"
    write_schema1_checkpoint(run, 2, MODEL, VOCAB, val_loss=2.0)
    write_schema1_checkpoint(run, 4, MODEL, VOCAB, val_loss=1.5, mode="resume",
                             parent={"source": "resume", "path": str(run / "checkpoints/update_00000002"), "id": "old/update_00000002/x", "update": 2})
    return run


def test_schema_1_metadata_reads_with_its_lineage_and_overrides(old_run):
    metadata = schema.read_metadata(old_run / "checkpoints" / "update_00000004")
    assert metadata.schema_version == 1
    assert metadata.lineage.mode == "resume" and metadata.lineage.resumed_from.update == 2  # was "parent"
    assert metadata.hydra.overrides == ("run_name=old", "trainer.max_updates=4")
    assert metadata.metrics.val_loss == 1.5 and metadata.metrics.val_history == ((4, 1.5),)


def test_schema_1_checkpoints_resolve_validate_and_list(old_run, capsys):
    ckpt = CkptConfig(train_chain=["resume"])
    resolution = resolve(ckpt, purpose="train", run_dir=old_run, model=MODEL)
    assert resolution.mode == "resume" and resolution.chosen.path.name == "update_00000004"
    assert validate(old_run / "checkpoints" / "update_00000002", model=MODEL, vocab_size=len(VOCAB), full=True).ok

    assert ckpt_main(["list", str(old_run)]) == 0
    listed = capsys.readouterr().out
    assert "update_00000004" in listed and "best,last" in listed


def test_ckpt_info_prints_overrides_and_lineage_of_old_and_new_checkpoints(old_run, tmp_path, capsys):
    assert ckpt_main(["info", str(old_run / "checkpoints" / "update_00000004")]) == 0
    old = capsys.readouterr().out
    assert "trainer.max_updates=4" in old and "resumed from old/update_00000002/x (update 2)" in old

    new = make_f5app_checkpoint(tmp_path / "new" / "checkpoints", 6, MODEL, VOCAB, 1.0, overrides=("optim.lr=1e-3",))
    assert ckpt_main(["info", str(new)]) == 0
    assert "run_name=test optim.lr=1e-3" in capsys.readouterr().out


def test_ckpt_info_prints_scores_as_numbers_and_histories_as_counts(tmp_path, capsys):
    record = checkpoint_record(6, MODEL, VOCAB, 1.0, eval_scores=schema.EvalScores(wer=0.25, cer=0.1, sim=0.6, num_prompts=2))
    record.metadata = dataclasses.replace(record.metadata, metrics=dataclasses.replace(
        record.metadata.metrics, val_history=((3, 1.5), (6, 1.0)), eval_history=((6, 0.25, 0.1, 0.6),)))
    folder = CheckpointStore(tmp_path / "checkpoints", keep_last=0).save(record)

    assert ckpt_main(["info", str(folder)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert "wer=0.2500" in lines["metrics"] and "history" not in lines["metrics"] and "-" not in lines["metrics"]
    assert lines["history"].split(None, 1)[1] == "2 validations, 1 evaluation"


def test_a_finished_schema_1_run_is_recognised_as_finished_without_building_anything(old_run, compose_cfg):
    from f5app.sweep import start_line

    assert "already finished at update 4" in start_line(old_run, max_updates=4, epochs=100, label="old")
    assert "resuming from update 4 of 8" in start_line(old_run, max_updates=8, epochs=100, label="old")
