"""Held-out prompts: a deterministic draw from the validation split, or upstream's list formats, with missing audio reported by line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from f5app.config import DataConfig, EvalConfig
from f5app.evaluation.prompts import PromptListError, load_prompts, pair_prompts, read_prompt_list, require_targets
from train_fixtures import make_voice_folder


def clips(count: int) -> list[tuple[Path, str]]:
    return [(Path(f"/data/clip{i}.wav"), f"sentence number {i}") for i in range(count)]


def test_pairs_are_a_fixed_function_of_the_seed_not_of_the_input_order():
    first = pair_prompts(clips(6), num_prompts=4, seed=3)
    assert pair_prompts(list(reversed(clips(6))), num_prompts=4, seed=3) == first
    assert pair_prompts(clips(6), num_prompts=4, seed=4) != first
    assert len(first) == 4


def test_each_prompt_asks_for_another_clips_sentence_and_keeps_that_clip_as_ground_truth():
    texts = dict(clips(5))
    for prompt in pair_prompts(clips(5), num_prompts=0, seed=0):
        assert prompt.ref_audio != prompt.target_audio
        assert prompt.text == texts[prompt.target_audio] and prompt.ref_text == texts[prompt.ref_audio]
    assert len(pair_prompts(clips(5), num_prompts=0, seed=0)) == 5  # 0: all
    assert len(pair_prompts(clips(5), num_prompts=50, seed=0)) == 5


def test_validation_prompts_come_from_the_clips_training_holds_out(tmp_path):
    folder = make_voice_folder(tmp_path, count=8)
    data = DataConfig(name="csv_wavs", path=str(folder), prepared_dir=str(tmp_path / "prepared"), val_fraction=0.25)
    prompts = load_prompts(EvalConfig(num_prompts=0), data)
    held_out = json.loads((tmp_path / "prepared" / "split.json").read_text())["val_audio"]
    assert sorted(str(p.ref_audio) for p in prompts) == sorted(held_out)
    metadata = dict(line.split("|") for line in (folder / "metadata.csv").read_text().splitlines()[1:])
    for prompt in prompts:
        assert prompt.text == metadata[f"wavs/{prompt.target_audio.name}"]


def test_without_a_recorded_data_set_a_prompt_list_is_asked_for():
    with pytest.raises(PromptListError, match="eval.prompt_file"):
        load_prompts(EvalConfig(), data=None)


def _wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, dtype=np.float32), 16000)
    return path


@pytest.mark.slow
def test_seed_tts_meta_lst_reads_as_upstream_reads_it(tmp_path):
    from f5_tts.eval.utils_eval import get_seedtts_testset_metainfo

    _wav(tmp_path / "prompt-wavs" / "p1.wav")
    _wav(tmp_path / "prompt-wavs" / "p2.wav")
    _wav(tmp_path / "wavs" / "u1.wav")  # the four-column form's ground truth
    meta = tmp_path / "meta.lst"
    meta.write_text(
        "u1|Prompt one.|prompt-wavs/p1.wav|Target one.\n"
        f"u2|Prompt two.|prompt-wavs/p2.wav|Target two.|{tmp_path / 'gt2.wav'}\n"
    )
    ours = read_prompt_list(meta)
    theirs = get_seedtts_testset_metainfo(str(meta))
    assert [(p.id, p.ref_text, str(p.ref_audio), p.text, str(p.target_audio)) for p in ours] == [tuple(row) for row in theirs]
    assert [p.line for p in ours] == [1, 2]


def test_librispeech_pc_list_reads_as_upstream_reads_it(tmp_path):
    from f5_tts.eval.utils_eval import get_librispeech_test_clean_metainfo

    root = tmp_path / "LibriSpeech" / "test-clean"
    for utt in ("1089-134686-0000", "1188-133604-0006"):
        speaker, chapter, _ = utt.split("-")
        _wav(root / speaker / chapter / f"{utt}.flac")
    listing = tmp_path / "librispeech_pc_test_clean_cross_sentence.lst"
    listing.write_text("1089-134686-0000\t5.2\tHe hoped there would be stew.\t1188-133604-0006\t6.1\tBut it is not so.\n")
    (prompt,) = read_prompt_list(listing, audio_root=root)
    ((gen_utt, ref_txt, ref_wav, gen_txt, gen_wav),) = get_librispeech_test_clean_metainfo(str(listing), str(root))
    assert (prompt.id, prompt.ref_text, str(prompt.ref_audio), str(prompt.target_audio)) == (gen_utt, ref_txt, ref_wav, gen_wav)
    assert prompt.text == gen_txt.strip()  # upstream prepends a space for its text concatenation
    with pytest.raises(PromptListError, match="eval.audio_root"):
        read_prompt_list(listing)


def test_missing_audio_is_reported_by_line(tmp_path):
    _wav(tmp_path / "ok.wav")
    meta = tmp_path / "meta.lst"
    meta.write_text("a|x|ok.wav|Say a.\n\nb|x|missing-1.wav|Say b.\nc|x|ok.wav|Say c.\nd|x|missing-2.wav|Say d.\n")
    with pytest.raises(PromptListError) as caught:
        read_prompt_list(meta)
    message = str(caught.value)
    assert "\n" not in message and "2 prompt(s)" in message
    assert f"line 3: {tmp_path / 'missing-1.wav'}" in message and f"line 5: {tmp_path / 'missing-2.wav'}" in message


def test_recordings_need_every_ground_truth_and_say_which_lines_lack_one(tmp_path):
    _wav(tmp_path / "ok.wav")
    meta = tmp_path / "meta.lst"
    meta.write_text("a|x|ok.wav|Say a.|ok.wav\nb|x|ok.wav|Say b.\n")  # b: no fifth column, no wavs/b.wav
    prompts = read_prompt_list(meta)
    with pytest.raises(PromptListError, match=r"lacks 1: line 2"):
        require_targets(prompts, str(meta))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("just some words\n", "line 1: not a prompt list line"),
        ("a|x|ok.wav|\n", "line 1: the target text"),
        ("a|x|ok.wav|Fine.\nb|too|few\n", "line 2: expected 4 or 5"),
        ("# only a comment\n", "holds no prompts"),
    ],
)
def test_malformed_lists_name_the_line(tmp_path, content, expected):
    _wav(tmp_path / "ok.wav")
    meta = tmp_path / "meta.lst"
    meta.write_text(content)
    with pytest.raises(PromptListError, match=expected):
        read_prompt_list(meta)


def test_num_prompts_keeps_the_first_of_a_list_and_formats_are_checked(tmp_path):
    _wav(tmp_path / "ok.wav")
    meta = tmp_path / "meta.lst"
    meta.write_text("".join(f"u{i}|x|ok.wav|Say {i}.\n" for i in range(5)))
    assert [p.id for p in load_prompts(EvalConfig(prompt_file=str(meta), num_prompts=2))] == ["u0", "u1"]
    with pytest.raises(PromptListError, match="prompt_format=csv"):
        read_prompt_list(meta, fmt="csv")
    with pytest.raises(PromptListError, match="does not exist"):
        read_prompt_list(tmp_path / "nope.lst")
