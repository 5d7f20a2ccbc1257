"""The studio's rules that need no trained run: paths under the roots, the training form, review versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from f5app.studio import forms, review
from f5app.studio.roots import PathRefused, Roots


@pytest.fixture
def roots(tmp_path) -> Roots:
    (tmp_path / "outputs" / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "voice").mkdir(parents=True)
    return Roots.of(tmp_path / "outputs", [str(tmp_path / "data")])


def test_paths_resolve_under_output_root_or_a_data_root_and_nowhere_else(roots, tmp_path):
    assert roots.inside("runs/demo") == roots.output_root / "runs" / "demo"
    assert roots.in_data(tmp_path / "data" / "voice") == (tmp_path / "data" / "voice").resolve()
    (roots.output_root / "runs" / "demo" / "out").symlink_to(tmp_path)
    for outside in ("/etc/passwd", "../secret", str(tmp_path), "runs/demo/out/x.wav", "runs/../../data/../x", ""):
        with pytest.raises(PathRefused):
            roots.inside(outside)
    with pytest.raises(PathRefused):
        roots.inside(tmp_path / "data" / "voice", data=False)  # checkpoints live under output_root only
    for name in ("..", "a/b", "", "-x", "x" * 200):
        with pytest.raises(PathRefused):
            roots.run_dir(name)


def test_the_form_writes_each_named_setting_itself_and_refuses_anything_else(roots, tmp_path):
    voice = tmp_path / "data" / "voice"
    assert forms.train_overrides({"run_name": "me", "data.path": str(voice), "trainer.max_updates": 20, "optim.lr": 0.001, "finetune": "lora"},
                                 roots) == ["run_name=me", f"data.path={voice.resolve()}", "finetune=lora", "trainer.max_updates=20", "optim.lr=0.001"]
    for values, words in (({"run_name": "me", "+hydra.callbacks.x._target_": "os.system"}, "unknown setting"),
                          ({"run_name": "me", "data": "demo", "optim.lr": float("nan")}, "between"),
                          ({"run_name": "me", "data": "demo", "trainer.max_updates": "1e3,2"}, "integer"),
                          ({"run_name": "me", "data": "demo", "trainer.max_updates": True}, "between"),
                          ({"run_name": "a=b", "data": "demo"}, "letters"),
                          ({"run_name": "me", "data": "demo", "logger": "${oc.env:HOME}"}, "not an option")):
        with pytest.raises(forms.FormError, match=words):
            forms.train_overrides(values, roots)
    odd = tmp_path / "data" / "a,b=${x}"
    odd.mkdir()
    with pytest.raises(forms.FormError, match="Hydra would read as syntax"):
        forms.train_overrides({"run_name": "me", "data.path": str(odd)}, roots)
    with pytest.raises(forms.FormError, match="does not replay"):
        forms.checked_overrides(["run_name=me", "+hydra.callbacks.x._target_=os.system"], roots)
    argv, shown = forms.command("f5app.train", ["run_name=me"], roots.output_root)
    assert argv[1:] == ["-m", "f5app.train", f"output_root={roots.output_root}", "run_name=me"]
    assert shown == f"python -m f5app.train output_root={roots.output_root} run_name=me"


def test_a_review_saved_against_an_older_version_is_refused_and_nothing_is_written(tmp_path):
    work = tmp_path / "f5app_clips"
    work.mkdir()
    (work / "metadata.csv").write_text("audio_file|text\nwavs/a.wav|one\n", encoding="utf-8")
    (work / "review.json").write_text('{"clips": [{"audio_file": "wavs/a.wav", "text": "one"}], "dropped": []}', encoding="utf-8")
    loaded = review.load(work)
    assert [(c["audio_file"], c["text"], c["state"]) for c in loaded["clips"]] == [("wavs/a.wav", "one", "accepted")]
    review.save(work, {"texts": {"wavs/a.wav": "two"}}, loaded["version"])
    assert (work / "metadata.csv").read_text(encoding="utf-8") == "audio_file|text\nwavs/a.wav|two\n"
    with pytest.raises(review.ReviewConflict, match="changed since this page loaded it"):
        review.save(work, {"texts": {"wavs/a.wav": "three"}}, loaded["version"])
    assert (work / "metadata.csv").read_text(encoding="utf-8") == "audio_file|text\nwavs/a.wav|two\n"
    review.save(work, {"reject": ["wavs/a.wav"]}, review.version(work))
    assert (work / "metadata.csv").read_text(encoding="utf-8") == "audio_file|text\n"
    with pytest.raises(Exception, match="not clips of this review"):
        review.save(work, {"texts": {"../../etc/passwd": "x"}}, review.version(work))
    assert Path(review.load(work)["metadata"]) == work / "metadata.csv"
