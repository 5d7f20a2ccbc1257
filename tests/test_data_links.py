"""What a data folder may hold besides audio: symbolic links out of it, FIFOs and devices named like
audio. data=recordings reads only regular files inside data.path (links out of it only with
data.follow_links=true); data=csv_wavs reads only regular files. Each hazard is one reported line
and the run ends: a FIFO never blocks it, a link to /dev/zero never feeds it forever.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from eval_fixtures import HUMAN_CLIPS, example_path
from f5app.config import DataConfig, RecordingsDataConfig, to_settings
from f5app.data.prepare import DataError
from f5app.data.sources import prepare_data as prepare
from f5app.files import NotRegularFile, open_regular, read_regular_bytes, sha256_file

#: Seconds a run over these few short files may take before we call it stuck (it takes ~5 s).
BOUND_SECONDS = 120


def bounded(call):
    """Run ``call`` in a thread and return its result, failing (not hanging) if it does not end."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 (re-raised below, in the test's thread)
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(BOUND_SECONDS)
    assert not worker.is_alive(), f"the run did not end within {BOUND_SECONDS} s (blocked on a FIFO or reading a device?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def recordings_config(compose_cfg, folder: Path, *overrides: str) -> RecordingsDataConfig:
    # data.speaker=all: the folder holds two of f5-tts's voices, and which are kept is not what is tested here
    cfg = compose_cfg("prepare", ["data=recordings", f"data.path={folder}", "asr=tiny_en", "data.speaker=all", *overrides])
    return to_settings(OmegaConf.to_container(cfg.data, resolve=True), RecordingsDataConfig)


@pytest.fixture
def hazards(tmp_path) -> Path:
    """A shared recordings folder: one real recording with its transcript, and four planted entries."""
    outside = tmp_path / "private"
    outside.mkdir()
    private = shutil.copy(example_path("multi/town.flac"), outside / "diary.flac")
    root = tmp_path / "shared"
    root.mkdir()
    shutil.copy(example_path("basic/basic_ref_en.wav"), root / "nature.wav")
    (root / "nature.txt").write_text(HUMAN_CLIPS["basic/basic_ref_en.wav"], encoding="utf-8")
    os.symlink(private, root / "borrowed.flac")  # a real recording elsewhere
    os.symlink(outside, root / "elsewhere")  # a folder elsewhere
    os.mkfifo(root / "pipe.wav")
    os.symlink("/dev/zero", root / "zero.wav")
    return root


def test_recordings_skip_links_out_of_the_folder_fifos_and_devices_and_report_each(hazards, compose_cfg, one_torch_thread):
    result = bounded(lambda: prepare(recordings_config(compose_cfg, hazards), progress=False))

    review = json.loads(result.review_path.with_suffix(".json").read_text(encoding="utf-8"))
    problems = {problem["source"]: problem for problem in review["problems"]}
    assert {name: problem["reason"] for name, problem in problems.items()} == {
        "borrowed.flac": "outside_folder", "elsewhere": "outside_folder", "pipe.wav": "not_a_file", "zero.wav": "not_a_file",
    }
    assert "data.follow_links=true" in problems["borrowed.flac"]["detail"]
    assert "FIFO" in problems["pipe.wav"]["detail"] and "character device" in problems["zero.wav"]["detail"]
    assert {clip["source"] for clip in review["clips"]} == {"nature.wav"}
    metadata = (result.review_path.parent / "metadata.csv").read_text(encoding="utf-8")
    assert "rainbow" not in metadata.lower()  # the private recording's words never reach the training set


def test_recordings_read_a_link_out_of_the_folder_when_follow_links_is_true(hazards, compose_cfg, one_torch_thread):
    (hazards / "elsewhere").unlink()
    result = bounded(lambda: prepare(recordings_config(compose_cfg, hazards, "data.follow_links=true"), progress=False))

    review = json.loads(result.review_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert {p["source"]: p["reason"] for p in review["problems"]} == {"pipe.wav": "not_a_file", "zero.wav": "not_a_file"}
    assert {clip["source"] for clip in review["clips"]} == {"nature.wav", "borrowed.flac"}
    borrowed = " ".join(clip["text"] for clip in review["clips"] if clip["source"] == "borrowed.flac").lower()
    assert "rainbow" in borrowed  # tiny.en heard the linked recording


def write_tone(path: Path, seconds: float = 1.0, rate: int = 24000) -> None:
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32), rate)


def test_csv_wavs_reports_rows_naming_a_fifo_or_a_device_and_prepares_the_rest(tmp_path):
    (tmp_path / "wavs").mkdir()
    write_tone(tmp_path / "wavs" / "a.wav")
    os.mkfifo(tmp_path / "wavs" / "pipe.wav")
    os.symlink("/dev/zero", tmp_path / "wavs" / "zero.wav")
    (tmp_path / "metadata.csv").write_text("audio_file|text\nwavs/a.wav|hello\nwavs/pipe.wav|stuck\nwavs/zero.wav|endless\n")

    prepared = bounded(lambda: prepare(DataConfig(path=str(tmp_path)), progress=False))

    report = json.loads((prepared.dir / "report.json").read_text(encoding="utf-8"))
    assert prepared.num_items == 1
    assert {row["line"]: row["reason"] for row in report["skipped_rows"]} == {3: "not_a_file", 4: "not_a_file"}
    assert "FIFO" in report["skipped_rows"][0]["detail"] and "character device" in report["skipped_rows"][1]["detail"]


@pytest.mark.parametrize("planted", ["fifo", "dev_zero"])
def test_csv_wavs_refuses_a_metadata_csv_that_is_not_a_regular_file(tmp_path, planted):
    if planted == "fifo":
        os.mkfifo(tmp_path / "metadata.csv")
    else:
        os.symlink("/dev/zero", tmp_path / "metadata.csv")

    with pytest.raises(DataError, match="metadata.csv is not a regular file but a (FIFO|character device)"):
        bounded(lambda: prepare(DataConfig(path=str(tmp_path)), progress=False))


def test_open_regular_opens_files_and_refuses_fifos_devices_and_folders_without_blocking(tmp_path):
    (tmp_path / "plain").write_bytes(b"abc")
    os.mkfifo(tmp_path / "pipe")
    with open_regular(tmp_path / "plain") as handle:
        assert handle.read() == b"abc"
    for path, kind in ((tmp_path / "pipe", "FIFO"), (Path("/dev/zero"), "character device"), (tmp_path, "folder")):
        with pytest.raises(NotRegularFile, match=f"not a regular file but a {kind}"):
            bounded(lambda path=path: sha256_file(path))
    with pytest.raises(NotRegularFile, match="larger than 2 bytes"):
        read_regular_bytes(tmp_path / "plain", max_bytes=2)
