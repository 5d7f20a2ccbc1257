"""eval.sets in a real run: the tiny model trained for 3 updates, evaluated at each on its held-out
split and on an English prompt list (f5-tts's shipped recording), heard by the bundled tiny.en;
then ``python -m f5app.eval`` on the same run. The store's ranking and bound are specified in
tests/test_eval_sets.py with checkpoints of chosen scores."""

from __future__ import annotations

import json

import pytest

from f5app.ckpt.schema import read_metadata
from tests.eval_fixtures import HUMAN_CLIPS, example_path
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

EVAL = {"eval.every": 1, "eval.num_prompts": 2, "eval.nfe_step": 4, "asr.beam_size": 1, "vocoder.n_iter": 4}
MARGIN = 0.05


@pytest.fixture(scope="module")
def english_list(tmp_path_factory):
    """One prompt: the shipped speaker says a new sentence; its own recording is the ground truth."""
    folder = tmp_path_factory.mktemp("prompts")
    clip = example_path("basic/basic_ref_en.wav")
    path = folder / "en.lst"
    path.write_text(f"nature|{HUMAN_CLIPS['basic/basic_ref_en.wav']}|{clip}|{HUMAN_CLIPS['basic/basic_ref_en.wav']}|{clip}\n")
    return path


@pytest.fixture(scope="module")
def run_with_sets(english_list, tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    def compose_cfg(name, overrides):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(name, overrides=overrides)

    voice = make_voice_folder(tmp_path_factory.mktemp("data"), count=8)
    run_dir = tmp_path_factory.mktemp("runs") / "sets"
    overrides = tiny_overrides(voice, **{**EVAL, "trainer.max_updates": 3, "trainer.save_every": 0, "ckpt.keep_last": 0, "logger": "tensorboard",
                                         "ckpt.best_metric": "wer@target", "ckpt.base_set": "en", "ckpt.max_base_wer_rise": MARGIN})
    sets = f"++eval.sets={{target:{{}},en:{{prompt_file:{english_list},language:en}}}}"
    train_in_process(compose_cfg, run_dir, overrides + [sets])
    return run_dir


def updates(run_dir):
    return sorted(int(p.name[7:]) for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("update_"))


def test_each_set_is_scored_on_its_own_and_recorded_in_every_evaluated_checkpoint(run_with_sets):
    records = {u: read_metadata(run_with_sets / "checkpoints" / f"update_{u:08d}") for u in updates(run_with_sets)}
    assert list(records) == [1, 2, 3]
    last = records[3].metrics
    assert last.eval.sets["target"].num_prompts == 2 and last.eval.sets["en"].num_prompts == 1
    assert last.eval.num_prompts == 3  # the aggregate is over every set's prompts
    assert last.eval.wer == pytest.approx((2 * last.eval.sets["target"].wer + last.eval.sets["en"].wer) / 3)
    assert [(u, name) for u, name, *_ in last.eval_set_history] == [(u, name) for u in (1, 2, 3) for name in ("target", "en")]  # in the order given
    for update, record in records.items():
        assert (update, "en", record.metrics.value("wer@en")) in [point[:3] for point in last.eval_set_history]
    results = json.loads((run_with_sets / "eval" / "update_00000003" / "results.json").read_text())
    assert results["sets"]["en"]["language"] == "en" and results["sets"]["target"]["metrics"]["num_prompts"] == 2
    assert sorted(item["id"] for item in results["items"])[0] == "en:nature"
    assert (run_with_sets / "eval" / "update_00000003" / "en" / "nature.wav").is_file()


def test_each_sets_scores_go_to_the_tracker(run_with_sets):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_with_sets / "tensorboard")).Reload()
    assert {"eval/wer", "eval/en/wer", "eval/en/sim", "eval/target/wer", "eval/target/cer"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/en/wer")] == [1, 2, 3]


def test_best_is_the_lowest_target_wer_among_checkpoints_whose_english_stayed_in_bounds(run_with_sets):
    records = [read_metadata(run_with_sets / "checkpoints" / f"update_{u:08d}") for u in updates(run_with_sets)]
    first_en = records[0].metrics.value("wer@en")
    allowed = [r for r in records if r.metrics.value("wer@en") - first_en <= MARGIN]
    expected = min(allowed, key=lambda r: (r.metrics.value("wer@target"), -r.update))
    best = json.loads((run_with_sets / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "wer@target"
    assert best["value"] == pytest.approx(expected.metrics.value("wer@target"))
    assert read_metadata(run_with_sets / "checkpoints" / best["name"]).metrics.value("wer@en") - first_en <= MARGIN


def test_f5app_eval_scores_the_sets_the_run_recorded(run_with_sets, compose_cfg, tmp_path, capsys):
    from f5app.eval import run

    out = tmp_path / "sets.json"
    record = run(compose_cfg("eval", [f"run_dir={run_with_sets}", f"out={out}", "compare=[" + str(run_with_sets) + ",recordings]"]), overrides=[])
    rows = {row["label"]: row for row in record["compare"]}
    assert set(rows[str(run_with_sets)]["sets"]) == {"target", "en"}
    assert rows[str(run_with_sets)]["sets"]["en"]["metrics"]["num_prompts"] == 1
    assert rows["recordings"]["sets"]["en"]["metrics"]["wer"] < 0.2  # the speaker's own recording of the sentence
    table = capsys.readouterr().out
    assert "wer@en" in table and "sim@target" in table
    assert json.loads(out.read_text())["compare"][1]["sets"]["en"]["language"] == "en"
