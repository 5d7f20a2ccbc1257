"""eval.sets: named prompt sets scored on their own, their scores in every checkpoint's metadata,
ckpt.best_metric=wer@SET and the base-language bound (ckpt.base_set / ckpt.max_base_wer_rise).

The checkpoints here are written by the real writer (tests/ckpt_factory.py); the settings are
composed by Hydra from conf/ as the entry points compose them. Training with sets is in
tests/test_train_eval_sets.py (slow)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from ckpt_factory import checkpoint_record, tiny_model_config, tiny_vocab
from f5app.ckpt import schema
from f5app.ckpt.resolve import resolve
from f5app.ckpt.store import CheckpointStore, base_bound
from f5app.config import EvalAppConfig, InferConfig, TrainConfig, to_settings
from f5app.errors import UserError
from f5app.evaluation.sets import check_metric_sets, load_sets
from legacy_layout import write_schema1_checkpoint

MODEL, VOCAB = tiny_model_config(), tiny_vocab()
SETS = "++eval.sets={target:{},en:{prompt_file:PROMPTS,language:en,num_prompts:1}}"


def scores(en_wer: float, target_wer: float) -> schema.EvalScores:
    per_set = {"target": schema.EvalScores(target_wer, target_wer / 2, 0.5, 2), "en": schema.EvalScores(en_wer, en_wer / 2, 0.6, 1)}
    return schema.EvalScores((en_wer + 2 * target_wer) / 3, None, 0.55, 3, {"asr": {"name": "tiny_en"}}, per_set)


def save(store: CheckpointStore, update: int, history: list, en_wer: float, target_wer: float, val_loss: float = 1.0):
    """One evaluated checkpoint, its evaluation appended to the run's per-set history (as the trainer does)."""
    history += [(update, "target", target_wer, target_wer / 2, 0.5), (update, "en", en_wer, en_wer / 2, 0.6)]
    return store.save(checkpoint_record(update, MODEL, VOCAB, val_loss, eval_scores=scores(en_wer, target_wer), eval_set_history=tuple(history)))


def read(path):
    return json.loads(path.read_text())


# ---------------------------------------------------------------------- settings


@pytest.fixture
def prompt_file(tmp_path):
    from tests.eval_fixtures import HUMAN_CLIPS, example_path

    path = tmp_path / "en.lst"
    path.write_text(f"p1|{HUMAN_CLIPS['basic/basic_ref_en.wav']}|{example_path('basic/basic_ref_en.wav')}|Please call Stella.\n")
    return path


def test_sets_are_typed_settings_composed_from_the_command_line(compose_cfg, prompt_file):
    settings = to_settings(compose_cfg("eval", [SETS.replace("PROMPTS", str(prompt_file))]), EvalAppConfig)
    assert list(settings.eval.sets) == ["target", "en"]
    assert settings.eval.sets["en"].language == "en" and settings.eval.sets["en"].num_prompts == 1
    assert settings.eval.sets["target"].prompt_file is None  # the run's own held-out split
    assert to_settings(compose_cfg("eval", []), EvalAppConfig).eval.sets == {}  # default: no sets, one set as before


def test_each_set_reads_its_own_prompts_in_its_own_language(compose_cfg, prompt_file):
    settings = to_settings(compose_cfg("eval", [SETS.replace("PROMPTS", str(prompt_file)), "eval.language=pt"]), EvalAppConfig).eval
    held_out = []
    sets = load_sets(settings, held_out=lambda one: held_out.append(one) or ["held-out prompt"])
    assert [(s.name, s.language) for s in sets] == [("target", "pt"), ("en", "en")]  # null: eval.language
    assert sets[1].prompts[0].text == "Please call Stella." and sets[0].prompts == ["held-out prompt"]
    assert held_out[0].num_prompts == settings.num_prompts
    # without sets: the one unnamed set, eval.prompt_file or the held-out split, in eval.language
    (only,) = load_sets(to_settings(compose_cfg("eval", ["eval.language=pt"]), EvalAppConfig).eval, held_out=lambda one: ["x"])
    assert (only.name, only.language, only.prompts) == (None, "pt", ["x"])


@pytest.mark.parametrize("override, message", [
    ("++eval.sets={Bad.Name:{}}", "eval.sets.Bad.Name: a set name is"),
    ("++eval.sets={pt:{prompt_file:/no/such.lst}}", "eval.sets.pt.prompt_file=/no/such.lst does not exist"),
    ("++eval.sets={pt:{prompt_format:csv}}", "eval.sets.pt.prompt_format=csv is not a format"),
])
def test_a_bad_set_is_refused_in_one_line_before_training(compose_cfg, tmp_path, override, message):
    from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

    voice = make_voice_folder(tmp_path / "data", count=4)
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("[", r"\[")) as caught:
        train_in_process(compose_cfg, tmp_path / "run", tiny_overrides(voice, **{"eval.every": 1}) + [override])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("overrides, message", [
    (["ckpt.best_metric=wer@pt"], "ckpt.best_metric=wer@pt names set 'pt', which eval.sets does not hold (sets: target)"),
    (["ckpt.best_metric=loss@target"], "ckpt.best_metric=loss@target: unknown metric"),
    (["objective=sim@nope"], "objective=sim@nope names set 'nope'"),
    (["ckpt.base_set=en"], "ckpt.base_set=en is not a set of eval.sets (sets: target)"),
    (["ckpt.base_set=target", "eval.every=0"], "measured by evaluation, which eval.every=0 switches off"),
])
def test_a_metric_or_bound_naming_an_unknown_set_is_refused(compose_cfg, overrides, message):
    cfg = to_settings(compose_cfg("train", ["experiment=demo", "++eval.sets={target:{}}", *overrides]), TrainConfig)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_metric_sets(cfg.eval, cfg.ckpt.best_metric, cfg.objective, cfg.ckpt.base_set)


# ---------------------------------------------------------------------- the checkpoint's record


def test_each_sets_scores_and_history_round_trip_through_the_checkpoint_writer(tmp_path):
    history: list = []
    folder = save(CheckpointStore(tmp_path, keep_last=0), 100, history, en_wer=0.2, target_wer=0.5)
    record = schema.read_metadata(folder)
    assert record.metrics.eval.sets["en"].wer == 0.2 and record.metrics.eval.sets["target"].num_prompts == 2
    assert record.metrics.value("wer@en") == 0.2 and record.metrics.value("sim@target") == 0.5
    assert record.metrics.value("wer@fr") is None  # a set this run never scored
    assert record.metrics.first_set_scores("en") == (100, 0.2, 0.1, 0.6)
    assert read(folder / "metadata.json")["metrics"]["eval"]["sets"]["en"]["wer"] == 0.2


def test_checkpoints_without_sets_are_written_and_read_as_before(tmp_path):
    plain = CheckpointStore(tmp_path / "new", keep_last=0).save(
        checkpoint_record(100, MODEL, VOCAB, 1.0, eval_scores=schema.EvalScores(0.3, 0.1, 0.5, 4, {"asr": {}})))
    written = read(plain / "metadata.json")["metrics"]
    assert set(written["eval"]) == {"wer", "cer", "sim", "num_prompts", "models"} and "eval_set_history" not in written
    assert schema.read_metadata(plain).metrics.eval.sets == {}

    old = write_schema1_checkpoint(tmp_path / "old", 100, MODEL, VOCAB, val_loss=1.0)  # release 0.1.0's layout
    metrics = schema.read_metadata(old).metrics
    assert metrics.eval_set_history == () and metrics.value("wer@en") is None
    store = CheckpointStore(tmp_path / "old" / "checkpoints", keep_last=0, best_metric="wer@en", bound=base_bound("en", 0.05))
    assert store.rebuild_best() is None  # nothing measured it: no best, nothing raised


# ---------------------------------------------------------------------- best by a set, within the bound


def test_best_ranks_by_one_sets_metric(tmp_path):
    store, history = CheckpointStore(tmp_path, keep_last=0, best_metric="wer@target"), []
    save(store, 100, history, en_wer=0.1, target_wer=0.6)
    save(store, 200, history, en_wer=0.5, target_wer=0.3)
    save(store, 300, history, en_wer=0.2, target_wer=0.4)
    best = read(tmp_path / "best.json")
    assert (best["name"], best["metric"], best["value"]) == ("update_00000200", "wer@target", 0.3)


def test_a_checkpoint_whose_base_wer_rose_past_the_margin_is_never_best_and_the_log_says_why(tmp_path, caplog):
    ckpt_dir = tmp_path / "run" / "checkpoints"
    store, history = CheckpointStore(ckpt_dir, keep_last=1, best_metric="wer@target", bound=base_bound("en", 0.05)), []
    save(store, 100, history, en_wer=0.20, target_wer=0.6)  # the run's first evaluation: en at 0.20
    save(store, 200, history, en_wer=0.24, target_wer=0.4)  # +0.04: in bounds
    with caplog.at_level(logging.WARNING, logger="f5app.ckpt.store"):
        save(store, 300, history, en_wer=0.40, target_wer=0.1)  # the best target WER, but en rose 0.20
    best = read(ckpt_dir / "best.json")
    assert (best["name"], best["value"]) == ("update_00000200", 0.4)
    assert "update_00000300 is not best by wer@target: wer@en 0.400 rose 0.200 over the run's first evaluation (0.200 at update 100)" in caplog.text
    assert "ckpt.max_base_wer_rise=0.05" in caplog.text
    assert (ckpt_dir / "update_00000200").is_dir()  # retention (keep_last=1) keeps the best


def test_ckpt_best_applies_the_bound_when_it_ranks(tmp_path):
    ckpt_dir = tmp_path / "run" / "checkpoints"
    store, history = CheckpointStore(ckpt_dir, keep_last=0), []  # training ranked by val_loss, no bound
    save(store, 100, history, en_wer=0.20, target_wer=0.6)
    save(store, 200, history, en_wer=0.24, target_wer=0.4)
    save(store, 300, history, en_wer=0.40, target_wer=0.1)
    asked = replace(InferConfig().ckpt, name="best", infer_chain=["best"], best_metric="wer@target")
    assert resolve(asked, purpose="infer", run_dir=tmp_path / "run", model=None).chosen.path.name == "update_00000300"
    bounded = replace(asked, base_set="en", max_base_wer_rise=0.05)
    assert resolve(bounded, purpose="infer", run_dir=tmp_path / "run", model=None).chosen.path.name == "update_00000200"
    assert read(ckpt_dir / "best.json")["metric"] == "val_loss"  # resolution ranks; it never rewrites best.json


def test_the_bound_also_holds_when_ranking_by_validation_loss(tmp_path):
    store, history = CheckpointStore(tmp_path, keep_last=0, bound=base_bound("en", 0.05)), []
    save(store, 100, history, en_wer=0.2, target_wer=0.6, val_loss=1.0)
    save(store, 200, history, en_wer=0.5, target_wer=0.6, val_loss=0.5)  # lower loss, but the base language slipped
    store.save(checkpoint_record(300, MODEL, VOCAB, 0.1))  # not evaluated: cannot show it stayed in bounds
    assert read(tmp_path / "best.json")["name"] == "update_00000100"


def test_a_negative_margin_is_refused():
    with pytest.raises(UserError, match="ckpt.max_base_wer_rise=-0.1 must be 0 or more"):
        base_bound("en", -0.1)


# ---------------------------------------------------------------------- the report and ckpt list


def write_job_with_sets(sweep_dir, lr: str, evaluations: dict[int, tuple[float, float]], objective: str = "wer@target"):
    """A finished sweep job whose checkpoints carry (wer@en, wer@target) as the trainer records them."""
    import yaml

    from f5app.run_state import write_run_status
    from test_report import FIXED, job_folder

    job = job_folder(sweep_dir, lr)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*FIXED, f"optim.lr={lr}", "trainer.max_updates=4", "logger=none"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_updates": 4, "epochs": 100}, "objective": objective}))
    store, history = CheckpointStore(job / "checkpoints", keep_last=1, best_metric=objective), []
    for update, (en_wer, target_wer) in evaluations.items():
        save(store, update, history, en_wer=en_wer, target_wer=target_wer)
    write_run_status(job, "finished", update=max(evaluations), epoch=0, max_updates=4, epochs=100)


def test_the_report_shows_each_sets_best_scores_and_ranks_by_a_sets_objective(tmp_path):
    import csv

    from f5app.report import collect, format_table, main
    from test_report import FIXED, write_multirun

    sweep = tmp_path / "sweeps" / "sets"
    write_multirun(sweep, [*FIXED, "optim.lr=1,2", "trainer.max_updates=4", "logger=none"])
    write_job_with_sets(sweep, "1", {2: (0.2, 0.6), 4: (0.3, 0.5)})
    write_job_with_sets(sweep, "2", {2: (0.1, 0.7), 4: (0.15, 0.45)})  # keep_last=1: update 2 survives only in the history
    report = collect(sweep)
    rows = {row.label: row for row in report.jobs}
    assert rows["optim.lr=1"].best_by_set["en"] == {"wer": 0.2, "cer": 0.1, "sim": 0.6}
    assert rows["optim.lr=2"].best_by_set["target"]["wer"] == 0.45
    assert report.objective == "wer@target" and report.best.label == "optim.lr=2"
    table = format_table(report)
    assert {"best WER@target", "best SIM@en"} <= set(table.splitlines()[1].split("  ")) | {c.strip() for c in table.splitlines()[1].split("  ")}
    assert "best by wer@target: optim.lr=2 (wer@target 0.4500)" in table
    assert main([str(sweep)]) == 0
    with open(sweep / "report.csv", newline="") as handle:
        by_label = {row["label"]: row for row in csv.DictReader(handle)}
    assert (by_label["optim.lr=2"]["best_wer@en"], by_label["optim.lr=2"]["best_wer@target"]) == ("0.1", "0.45")
    assert rows["optim.lr=2"].eval_set_curves["en"] == [[2, 0.1, 0.05, 0.6], [4, 0.15, 0.075, 0.6]]  # update 2 from the history
    assert (sweep / "report.png").stat().st_size > 1000


def test_ckpt_list_shows_a_column_per_set_and_metric(tmp_path, capsys):
    from f5app.ckpt_cli import main as ckpt_main

    store, history = CheckpointStore(tmp_path / "run" / "checkpoints", keep_last=0, best_metric="wer@target"), []
    save(store, 100, history, en_wer=0.25, target_wer=0.6)
    store.save(checkpoint_record(150, MODEL, VOCAB, 0.9))  # not evaluated
    save(store, 200, history, en_wer=0.125, target_wer=0.375)
    assert ckpt_main(["list", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "val_loss" in line).split()
    assert {"wer@target", "cer@target", "sim@target", "wer@en", "sim@en"} <= set(header)
    row = next(line for line in lines if "update_00000200" in line).split()
    assert row[header.index("wer@en")] == "0.1250" and row[header.index("wer@target")] == "0.3750"
    assert next(line for line in lines if "update_00000150" in line).split()[header.index("wer@en")] == "-"
    assert "best by wer@target" in "\n".join(lines)


def test_ckpt_info_shows_each_sets_scores_and_counts_their_history(tmp_path, capsys):
    from f5app.ckpt_cli import main as ckpt_main

    store, history = CheckpointStore(tmp_path / "checkpoints", keep_last=0), []
    save(store, 100, history, en_wer=0.25, target_wer=0.6)
    folder = save(store, 200, history, en_wer=0.125, target_wer=0.375)
    ckpt_main(["info", str(folder)])
    out = capsys.readouterr().out
    assert "wer@en=0.1250" in out and "wer@target=0.3750" in out and "sim@en=0.6000" in out
    assert "4 set evaluations" in out and "eval_set_history" not in out


def test_the_per_set_history_survives_a_resume_and_gives_a_sweeps_best(tmp_path):
    from f5app.ckpt.reader import CheckpointReader

    store, history = CheckpointStore(tmp_path, keep_last=0), []
    save(store, 100, history, en_wer=0.25, target_wer=0.6)
    record = checkpoint_record(200, MODEL, VOCAB, 1.0, eval_scores=scores(0.3, 0.5),
                               eval_set_history=(*history, (200, "target", 0.5, 0.25, 0.5), (200, "en", 0.3, 0.15, 0.6)))
    record.training_state.progress.eval_set_history = [list(point) for point in record.metadata.metrics.eval_set_history]
    folder = store.save(record)
    progress = CheckpointReader(folder).resume_state(0).training_state.progress
    assert progress.eval_set_history == [[100, "target", 0.6, 0.3, 0.5], [100, "en", 0.25, 0.125, 0.6],
                                         [200, "target", 0.5, 0.25, 0.5], [200, "en", 0.3, 0.15, 0.6]]
    metrics = schema.read_metadata(folder).metrics
    assert (metrics.best("wer@target"), metrics.best("wer@en"), metrics.best("sim@target")) == (0.5, 0.25, 0.5)
    # a training state written before sets existed resumes with an empty history
    assert schema.TrainingState.from_payload({"update": 1, "epoch": 0, "batch_in_epoch": 1, "samples_seen": 4}).progress.eval_set_history == []
