"""The sweep report with evaluation: WER/CER/SIM columns and curves, and the best job by the sweep's objective."""

from __future__ import annotations

import csv

import yaml

from ckpt_factory import checkpoint_record, tiny_model_config, tiny_vocab
from f5app.ckpt import schema
from f5app.ckpt.store import CheckpointStore
from f5app.report import collect, format_table, main
from f5app.run_state import write_run_status
from test_report import FIXED, job_folder, write_multirun


def write_evaluated_job(sweep_dir, lr: str, scores: dict[int, tuple[float, float, float, float]], objective: str = "wer"):
    """A finished job whose checkpoints carry (val_loss, wer, cer, sim) as the trainer records them."""
    job = job_folder(sweep_dir, lr)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*FIXED, f"optim.lr={lr}", "trainer.max_updates=4", "logger=none"]))
    config = {"trainer": {"max_updates": 4, "epochs": 100}, "optim": {"lr": float(lr)}, "objective": objective}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    store = CheckpointStore(job / "checkpoints", keep_last=10, best_metric=objective)
    for update, (val_loss, wer, cer, sim) in scores.items():
        evaluation = schema.EvalScores(wer=wer, cer=cer, sim=sim, num_prompts=2, models={"asr": {"name": "tiny_en"}})
        store.save(checkpoint_record(update, tiny_model_config(), tiny_vocab(), val_loss, config=config, eval_scores=evaluation))
    write_run_status(job, "finished", update=max(scores), epoch=0, max_updates=4, epochs=100)
    return job


def test_the_best_job_is_the_one_with_the_best_objective_and_eval_columns_are_shown(tmp_path):
    sweep = tmp_path / "sweeps" / "wer"
    write_multirun(sweep, [*FIXED, "optim.lr=1,2", "trainer.max_updates=4", "logger=none"])
    write_evaluated_job(sweep, "1", {2: (2.0, 0.9, 0.7, 0.50), 4: (1.5, 0.8, 0.6, 0.55)})  # lower val loss, worse WER
    write_evaluated_job(sweep, "2", {2: (2.5, 0.6, 0.5, 0.60), 4: (2.2, 0.7, 0.5, 0.58)})  # best WER 0.6 at update 2

    report = collect(sweep)
    rows = {row.label: row for row in report.jobs}
    assert (rows["optim.lr=2"].best_wer, rows["optim.lr=2"].best_cer, rows["optim.lr=2"].best_sim) == (0.6, 0.5, 0.60)
    assert rows["optim.lr=1"].eval_curve == [[2, 0.9, 0.7, 0.50], [4, 0.8, 0.6, 0.55]]
    assert report.objective == "wer" and report.best.label == "optim.lr=2"
    assert report.to_dict()["best"]["value"] == 0.6
    table = format_table(report)
    assert "best WER" in table.splitlines()[1] and "best SIM" in table.splitlines()[1]
    assert "best by wer: optim.lr=2 (wer 0.6000)" in table


def test_csv_and_png_carry_the_eval_metrics(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "wer"
    write_multirun(sweep, [*FIXED, "optim.lr=1", "trainer.max_updates=4", "logger=none"])
    write_evaluated_job(sweep, "1", {2: (2.0, 0.9, 0.7, 0.50), 4: (1.5, 0.8, 0.6, 0.55)})
    assert main([str(sweep)]) == 0
    with open(sweep / "report.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["best_wer"], row["best_sim"], row["objective"]) == ("0.8", "0.55", "wer")
    assert (sweep / "report.png").stat().st_size > 1000
    assert "report.png" in capsys.readouterr().out
