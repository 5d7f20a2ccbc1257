"""Data preparation: metadata.csv + audio -> upstream's prepared format, the skip report, the cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from f5app.config import ASSETS_DIR, DataConfig, to_settings
from f5app.data import prepare as prepare_module
from f5app.data.prepare import DataError, load_prepared, prepare
from f5app.data.tokenizer import extend_vocab, tokens_of_many
from f5app.data.vocab import read_vocab, upstream_vocab_path, write_vocab

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_tone(path: Path, seconds: float = 1.0, sample_rate: int = 24000, channels: int = 1) -> Path:
    """A quiet sine wave; the suffix (.wav/.flac/.ogg) picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sample_rate)) / sample_rate)
    if channels == 2:
        samples = np.stack([samples, 0.5 * samples], axis=1)
    sf.write(str(path), samples.astype(np.float32), sample_rate)
    return path


def write_metadata(folder: Path, lines: list[str]) -> Path:
    path = folder / "metadata.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def data_config(folder: Path, **overrides) -> DataConfig:
    return DataConfig(path=str(folder), **overrides)


def read_report(prepared_dir: Path) -> dict:
    return json.loads((prepared_dir / "report.json").read_text(encoding="utf-8"))


def arrow_rows(prepared_dir: Path) -> list[dict]:
    from datasets import Dataset

    return list(Dataset.from_file(str(prepared_dir / "raw.arrow")))


# --- accepted layouts ------------------------------------------------------------------------


def test_upstream_layout_accepts_relative_and_absolute_paths(tmp_path):
    relative = write_tone(tmp_path / "wavs" / "a.wav", 1.0)
    absolute = write_tone(tmp_path / "elsewhere" / "b.wav", 2.0)
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|Hello there.", f"{absolute}|General Kenobi!"])

    prepared = prepare(data_config(tmp_path))

    assert prepared.dir == tmp_path / ".f5app_prepared"
    assert prepared.num_items == 2 and prepared.skipped == 0
    assert prepared.total_seconds == pytest.approx(3.0)
    rows = arrow_rows(prepared.dir)
    assert [row["audio_path"] for row in rows] == [str(relative.resolve()), str(absolute.resolve())]
    assert ["".join(row["text"]) for row in rows] == ["Hello there.", "General Kenobi!"]


def test_extra_header_columns_are_ignored_and_a_pipe_in_a_two_column_transcript_is_kept(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_tone(tmp_path / "two" / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text|speaker", "wavs/a.wav|Hello.|alice"])
    write_metadata(tmp_path / "two", ["audio_file|text", "wavs/a.wav|either|or"])

    assert ["".join(row["text"]) for row in arrow_rows(prepare(data_config(tmp_path)).dir)] == ["Hello."]
    assert ["".join(row["text"]) for row in arrow_rows(prepare(data_config(tmp_path / "two")).dir)] == ["either|or"]


def test_ljspeech_layout_uses_normalized_text_when_present(tmp_path):
    write_tone(tmp_path / "wavs" / "LJ001-0001.wav")
    write_tone(tmp_path / "wavs" / "LJ001-0002.wav")
    write_tone(tmp_path / "wavs" / "LJ001-0003.wav")
    write_metadata(
        tmp_path,
        ["LJ001-0001|Dr. Who, 1963.|Doctor Who, nineteen sixty-three.", "LJ001-0002|Plain text.|", "LJ001-0003|Two columns"],
    )

    prepared = prepare(data_config(tmp_path))

    rows = arrow_rows(prepared.dir)
    assert ["".join(row["text"]) for row in rows] == ["Doctor Who, nineteen sixty-three.", "Plain text.", "Two columns"]
    assert rows[0]["audio_path"] == str((tmp_path / "wavs" / "LJ001-0001.wav").resolve())
    assert read_report(prepared.dir)["layout"] == "ljspeech"


def test_wav_flac_ogg_stereo_and_any_sample_rate_are_prepared_with_exact_durations(tmp_path):
    clips = {
        "mono16k.wav": (1.5, 16000, 1),
        "stereo44k.wav": (1.0, 44100, 2),
        "clip.flac": (2.0, 22050, 1),
        "clip.ogg": (1.25, 48000, 2),
    }
    for name, (seconds, rate, channels) in clips.items():
        write_tone(tmp_path / "wavs" / name, seconds, rate, channels)
    write_metadata(tmp_path, ["audio_file|text"] + [f"wavs/{name}|text of {name}" for name in clips])

    prepared = prepare(data_config(tmp_path))

    assert prepared.skipped == 0
    durations = {Path(row["audio_path"]).name: row["duration"] for row in arrow_rows(prepared.dir)}
    assert durations == pytest.approx({name: seconds for name, (seconds, _, _) in clips.items()}, abs=1e-3)


# --- bad rows --------------------------------------------------------------------------------


def test_every_kind_of_bad_row_is_reported_with_its_line_and_the_rest_is_prepared(tmp_path):
    write_tone(tmp_path / "wavs" / "good1.wav", 1.0)
    write_tone(tmp_path / "wavs" / "good2.wav", 1.0)
    write_tone(tmp_path / "wavs" / "short.wav", 0.1)
    write_tone(tmp_path / "wavs" / "long.wav", 4.0)
    (tmp_path / "wavs" / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    write_metadata(
        tmp_path,
        [
            "audio_file|text",  # line 1
            "wavs/good1.wav|first good clip",  # 2
            "wavs/missing.wav|no such file",  # 3
            "wavs/garbage.wav|not audio",  # 4
            "wavs/good2.wav|   ",  # 5 empty text
            "wavs/short.wav|too short",  # 6
            "wavs/long.wav|too long",  # 7
            "wavs/good1.wav|same file again",  # 8 duplicate
            "a line without any separator",  # 9
            "wavs/good2.wav|second good clip",  # 10
        ],
    )

    prepared = prepare(data_config(tmp_path, min_duration=0.3, max_duration=3.0))

    assert prepared.num_items == 2 and prepared.skipped == 7
    assert ["".join(row["text"]) for row in arrow_rows(prepared.dir)] == ["first good clip", "second good clip"]
    report = read_report(prepared.dir)
    assert [(row["line"], row["reason"]) for row in report["skipped_rows"]] == [
        (3, "missing_file"),
        (4, "unreadable_audio"),
        (5, "empty_text"),
        (6, "duration_out_of_range"),
        (7, "duration_out_of_range"),
        (8, "duplicate"),
        (9, "malformed_line"),
    ]
    assert report["skipped_by_reason"] == {
        "duplicate": 1, "duration_out_of_range": 2, "empty_text": 1, "malformed_line": 1, "missing_file": 1, "unreadable_audio": 1,
    }
    text_report = prepared.report_path.read_text(encoding="utf-8")
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"line {line}:" in text_report


def test_ljspeech_line_with_too_many_fields_is_reported_as_malformed(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["a|Some text.|Some text.", "b|x|y|z|w"])

    prepared = prepare(data_config(tmp_path))

    assert prepared.num_items == 1
    assert [(row["line"], row["reason"]) for row in read_report(prepared.dir)["skipped_rows"]] == [(2, "malformed_line")]


def test_no_usable_row_raises_one_data_error_that_names_the_report(tmp_path):
    write_metadata(tmp_path, ["audio_file|text", "wavs/gone.wav|hello", "wavs/also_gone.wav|world"])

    with pytest.raises(DataError) as raised:
        prepare(data_config(tmp_path))

    message = str(raised.value)
    assert "no usable clips" in message and "missing_file: 2" in message
    report_path = tmp_path / ".f5app_prepared" / "report.txt"
    assert str(report_path) in message and "\n" not in message
    assert "line 2: missing_file" in report_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "metadata.csv not found"),
        (b"", "is empty"),
        (b"path|transcript\nwavs/a.wav|hello\n", "wrong header"),
        (b"just one column\n", "not '|'-separated"),
        (b"audio_file|text\nwavs/\xff\xfe.wav|x\n", "not UTF-8"),
    ],
    ids=["missing", "empty", "wrong-header", "no-separator", "not-utf8"],
)
def test_missing_or_malformed_metadata_csv_is_a_one_line_error_naming_the_file(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "metadata.csv").write_bytes(content)

    with pytest.raises(DataError) as raised:
        prepare(data_config(tmp_path))

    message = str(raised.value)
    assert expected in message and str(tmp_path) in message and "\n" not in message


def test_data_path_that_is_not_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        prepare(data_config(tmp_path / "nope"))


def test_a_failed_preparation_leaves_the_previous_prepared_set_intact(tmp_path, monkeypatch):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|first version"])
    prepared = prepare(data_config(tmp_path))
    before = {path.name: path.read_bytes() for path in prepared.dir.iterdir()}

    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|second version"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_module, "_write_upstream_files", crash)
    with pytest.raises(OSError, match="disk full"):
        prepare(data_config(tmp_path))

    assert {path.name: path.read_bytes() for path in prepared.dir.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir() if ".tmp-" in path.name] == []


# --- cache -----------------------------------------------------------------------------------


def test_second_run_with_unchanged_inputs_does_no_work(tmp_path, caplog):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|hello"])
    first = prepare(data_config(tmp_path))
    arrow_mtime = (first.dir / "raw.arrow").stat().st_mtime_ns

    with caplog.at_level(logging.INFO, logger="f5app.data.prepare"):
        second = prepare(data_config(tmp_path))

    assert (second.dir / "raw.arrow").stat().st_mtime_ns == arrow_mtime
    assert second == first
    assert [record.message for record in caplog.records if "nothing to do" in record.message]


def test_changing_an_audio_file_invalidates_the_cache(tmp_path):
    audio = write_tone(tmp_path / "wavs" / "a.wav", 1.0)
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|hello"])
    assert prepare(data_config(tmp_path)).total_seconds == pytest.approx(1.0)

    write_tone(audio, 2.0)
    os.utime(audio, ns=(audio.stat().st_atime_ns, audio.stat().st_mtime_ns + 1_000_000_000))

    assert prepare(data_config(tmp_path)).total_seconds == pytest.approx(2.0)


def test_changing_metadata_or_settings_invalidates_the_cache(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav", 1.0)
    write_tone(tmp_path / "wavs" / "b.wav", 2.0)
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|hello", "wavs/b.wav|world"])
    assert prepare(data_config(tmp_path)).num_items == 2

    assert prepare(data_config(tmp_path, max_duration=1.5)).num_items == 1

    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|hello"])
    assert prepare(data_config(tmp_path)).num_items == 1


def test_prepared_dir_setting_chooses_where_the_set_is_written(tmp_path):
    write_tone(tmp_path / "data" / "wavs" / "a.wav")
    write_metadata(tmp_path / "data", ["audio_file|text", "wavs/a.wav|hello"])

    prepared = prepare(data_config(tmp_path / "data", prepared_dir=str(tmp_path / "out" / "set")))

    assert prepared.dir == tmp_path / "out" / "set"
    assert not (tmp_path / "data" / ".f5app_prepared").exists()
    assert load_prepared(prepared.dir) == prepared


# --- upstream compatibility ------------------------------------------------------------------


def test_output_has_upstreams_files_and_columns(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav", 1.0)
    write_tone(tmp_path / "wavs" / "b.wav", 1.5)
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|ab", "wavs/b.wav|ba c"])

    prepared = prepare(data_config(tmp_path))

    from datasets import Dataset

    dataset = Dataset.from_file(str(prepared.dir / "raw.arrow"))
    assert dataset.column_names == ["audio_path", "text", "duration"]
    assert dataset[1] == {"audio_path": str((tmp_path / "wavs" / "b.wav").resolve()), "text": list("ba c"), "duration": 1.5}
    durations = json.loads((prepared.dir / "duration.json").read_text(encoding="utf-8"))
    assert durations == {"duration": [1.0, 1.5]}
    assert read_vocab(prepared.dir / "vocab.txt") == prepared.vocab


# --- tokenizers and vocabularies -------------------------------------------------------------


def test_char_tokenizer_vocab_is_space_then_every_character_seen_sorted(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_tone(tmp_path / "wavs" / "b.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|Ça va, Zoé?", "wavs/b.wav|abc"])

    prepared = prepare(data_config(tmp_path, tokenizer="char"))

    assert prepared.vocab == [" "] + sorted(set("Ça va, Zoé?abc") - {" "})


def test_custom_tokenizer_keeps_the_given_vocab_and_appends_new_characters(tmp_path):
    base = [" ", "z", "y", "a"]
    write_vocab(base, tmp_path / "my_vocab.txt")
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|a yak"])

    prepared = prepare(data_config(tmp_path, tokenizer="custom", vocab_path=str(tmp_path / "my_vocab.txt")))

    assert prepared.vocab == [" ", "z", "y", "a", "k"]
    assert read_report(prepared.dir)["vocab_added"] == ["k"]


def test_custom_tokenizer_without_a_vocab_file_is_a_clear_error(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|hello"])

    with pytest.raises(DataError, match="data.vocab_path"):
        prepare(data_config(tmp_path, tokenizer="custom"))
    with pytest.raises(DataError, match="no such file"):
        prepare(data_config(tmp_path, tokenizer="custom", vocab_path=str(tmp_path / "missing.txt")))


def test_unknown_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.tokenizer='bpe'"):
        prepare(data_config(tmp_path, tokenizer="bpe"))


def test_pinyin_tokenizer_converts_chinese_and_extends_upstreams_pretrained_vocab(tmp_path):
    write_tone(tmp_path / "wavs" / "a.wav")
    write_metadata(tmp_path, ["audio_file|text", "wavs/a.wav|你好 hello ☃"])

    prepared = prepare(data_config(tmp_path, tokenizer="pinyin"))

    pretrained = read_vocab(upstream_vocab_path())
    assert len(pretrained) == 2545
    assert prepared.vocab[: len(pretrained)] == pretrained
    assert prepared.vocab[len(pretrained) :] == ["☃"]
    tokens = arrow_rows(prepared.dir)[0]["text"]
    assert "ni2" in tokens and "hao3" in tokens and "h" in tokens  # tone sandhi: ni3 hao3 -> ni2 hao3
    assert tokens == tokens_of_many(["你好 hello ☃"], "pinyin")[0]


def test_extend_vocab_keeps_base_order_and_appends_only_new_tokens_sorted():
    vocab, added = extend_vocab([" ", "b", "a"], ["c", "a", "é", "c", " "])

    assert vocab == [" ", "b", "a", "c", "é"]
    assert added == ["c", "é"]


# --- the bundled demo set and the command line -----------------------------------------------


def test_demo_data_set_prepares_cleanly(tmp_path, compose_cfg):
    cfg = compose_cfg("prepare", ["data=demo", f"output_root={tmp_path}"])
    data = to_settings(OmegaConf.to_container(cfg.data, resolve=True), DataConfig)
    assert Path(data.path) == ASSETS_DIR / "demo"

    prepared = prepare(data)

    assert prepared.dir == tmp_path / "prepared" / "demo"
    assert prepared.skipped == 0
    assert 30 <= prepared.num_items <= 60
    assert sum(path.stat().st_size for path in (ASSETS_DIR / "demo").rglob("*") if path.is_file()) <= 3_000_000
    assert (ASSETS_DIR / "demo" / "README.md").is_file()


@pytest.mark.slow
def test_prepare_command_line_writes_the_set_and_fails_cleanly_on_bad_input(tmp_path):
    write_tone(tmp_path / "voice" / "wavs" / "a.flac")
    write_metadata(tmp_path / "voice", ["audio_file|text", "wavs/a.flac|hello", "wavs/b.flac|missing"])
    (tmp_path / "bad").mkdir()
    write_metadata(tmp_path / "bad", ["file|words"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(folder: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "f5app.prepare", "data=csv_wavs", f"data.path={folder}", f"output_root={tmp_path / 'out'}"]
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    good = run(tmp_path / "voice")
    assert good.returncode == 0, good.stderr
    assert "1 clips" in good.stdout and "1 rows skipped" in good.stdout
    assert (tmp_path / "voice" / ".f5app_prepared" / "raw.arrow").is_file()
    # logs go under output_root, not into the current directory
    assert (tmp_path / "out" / "prepare_logs").is_dir()

    bad = run(tmp_path / "bad")
    assert bad.returncode == 2  # bad input (README: exit statuses)
    assert "wrong header" in bad.stderr and "Traceback" not in bad.stderr
