"""Held-out prompts: what evaluation asks a model to say, in whose voice.

A prompt is a reference clip with its transcript (the voice to clone) and a target text (what
to say). Two sources:

- **validation** (the default; :func:`validation_prompts`, :func:`pair_prompts`): the clips training held
  out (the same split, same seed), shuffled with ``eval.seed``; prompt *i* takes clip *i* as
  the reference and the next clip's text as the target, so the model never hears the target
  sentence spoken in its prompt. The next clip's audio is the ground truth (``source=recordings``).
- **a list file** (``eval.prompt_file``; :func:`read_prompt_list`), in upstream's evaluation formats:
  - Seed-TTS ``meta.lst`` (also our own format): ``id|ref_text|ref_audio|text[|target_audio]``,
    paths relative to the list's folder; without the fifth column the ground truth is
    ``wavs/<id>.wav`` beside the list, when it exists.
  - LibriSpeech-PC test-clean (``librispeech_pc_test_clean_cross_sentence.lst``):
    ``ref_utt<TAB>ref_seconds<TAB>ref_text<TAB>gen_utt<TAB>gen_seconds<TAB>gen_text``, audio
    under ``eval.audio_root``: ``<root>/<speaker>/<chapter>/<utt>.flac``.

A list whose audio is missing is reported by line (:class:`PromptListError`), never a traceback.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from f5app.config import MelConfig
from f5app.data.metadata import read_metadata
from f5app.data.sources import prepare_data
from f5app.errors import UserError

FORMATS = ("auto", "seedtts", "librispeech_pc")
MAX_LISTED = 5


class PromptListError(UserError):
    """A prompt list that cannot be used; the message names the file and the lines."""


@dataclass(frozen=True)
class Prompt:
    id: str
    ref_audio: Path
    ref_text: str
    text: str  # what the model is asked to say
    target_audio: Path | None = None  # a recording of ``text`` by the reference speaker (ground truth)
    line: int | None = None  # line in the list file it came from


def pair_prompts(clips: list[tuple[Path, str]], num_prompts: int, seed: int) -> list[Prompt]:
    """Prompts from held-out ``(audio, transcript)`` clips (see the module docstring)."""
    if not clips:
        return []
    order = sorted(clips, key=lambda clip: str(clip[0]))  # independent of the caller's order
    random.Random(seed).shuffle(order)
    count = len(order) if num_prompts <= 0 else min(num_prompts, len(order))
    prompts = []
    for index in range(count):
        ref_audio, ref_text = order[index]
        target_audio, text = order[(index + 1) % len(order)]
        prompts.append(Prompt(f"val{index:03d}-{Path(target_audio).stem}", Path(ref_audio), ref_text, text, Path(target_audio)))
    return prompts


def validation_prompts(data, num_prompts: int, seed: int) -> list[Prompt]:  # noqa: ANN001 (DataConfig)
    """Prompts from the validation split of ``data`` (a DataConfig), as training splits it."""
    from f5app.data.dataset import load_splits  # deferred: pulls torch at import (1.9 s, NOTES.md)

    prepared = prepare_data(data, progress=False)
    _, val = load_splits(prepared, MelConfig(), data.val_fraction, data.val_min_items, data.seed)
    return held_out_prompts(data, val.clips, num_prompts, seed, metadata_path=prepared.metadata_path)


def held_out_prompts(data, clips, num_prompts: int, seed: int, metadata_path: Path | None = None) -> list[Prompt]:  # noqa: ANN001 (DataConfig, dataset Clips)
    """Prompts from held-out dataset clips (``clip.audio_path``), with their transcripts as written
    in the metadata.csv they were prepared from (``metadata_path``; default ``data.path``'s — for
    data=recordings it is the reviewed one), since the prepared tokens are not always the text."""

    folder = metadata_path.parent if metadata_path else Path(data.path).expanduser().resolve()
    texts = {str(row.audio_path): row.text for row in read_metadata(folder).rows}
    return pair_prompts([(Path(c.audio_path), texts.get(c.audio_path, "".join(c.text))) for c in clips], num_prompts, seed)


def read_prompt_list(
    path: str | Path, fmt: str = "auto", audio_root: str | Path | None = None, num_prompts: int = 0
) -> list[Prompt]:
    """Prompts from a list file; ``num_prompts`` > 0 keeps the first that many."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise PromptListError(f"eval.prompt_format={fmt} is not a format; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise PromptListError(f"eval.prompt_file={path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise PromptListError(f"{path} is not UTF-8 (bad byte at offset {error.start})") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise PromptListError(f"{path} holds no prompts")
    if fmt == "auto":
        fmt = _detect(path, *numbered[0])
    if fmt == "librispeech_pc" and audio_root is None:
        raise PromptListError(f"{path} is a LibriSpeech-PC list: set eval.audio_root to the LibriSpeech test-clean folder")
    parse = _parse_seedtts if fmt == "seedtts" else _parse_librispeech
    prompts, problems = [], []
    for number, line in numbered:
        outcome = parse(line, number, path.parent, Path(audio_root).expanduser() if audio_root else None)
        if isinstance(outcome, str):
            problems.append(f"line {number}: {outcome}")
        else:
            prompts.append(outcome)
    if problems:
        raise PromptListError(f"{path} ({fmt}): {_listed(problems)}")
    missing = [f"line {p.line}: {p.ref_audio}" for p in prompts if not p.ref_audio.is_file()]
    if missing:
        raise PromptListError(f"{path}: {len(missing)} prompt(s) name reference audio that does not exist: {_listed(missing)}")
    return prompts[:num_prompts] if num_prompts > 0 else prompts


def require_targets(prompts: list[Prompt], where: str) -> None:
    """``source=recordings`` needs each prompt's ground-truth recording; refuse naming the lines."""
    missing = [
        f"{'line ' + str(p.line) if p.line else p.id}: {p.target_audio or '(no recording given)'}"
        for p in prompts
        if p.target_audio is None or not p.target_audio.is_file()
    ]
    if missing:
        raise PromptListError(f"source=recordings needs a recording of every target text; {where} lacks {len(missing)}: {_listed(missing)}")


def _detect(path: Path, number: int, line: str) -> str:
    if line.count("\t") == 5:
        return "librispeech_pc"
    if line.count("|") in (3, 4):
        return "seedtts"
    raise PromptListError(
        f"{path} line {number}: not a prompt list line; expected Seed-TTS 'id|ref_text|ref_audio|text[|target_audio]' "
        "or LibriSpeech-PC's six tab-separated columns (or set eval.prompt_format)"
    )


def _parse_seedtts(line: str, number: int, folder: Path, _root: Path | None) -> Prompt | str:
    fields = line.strip().split("|")
    if len(fields) not in (4, 5):
        return f"expected 4 or 5 '|'-separated fields (id|ref_text|ref_audio|text[|target_audio]), found {len(fields)}"
    utt, ref_text, ref_audio, text = (field.strip() for field in fields[:4])
    if not text:
        return "the target text (4th field) is empty"
    if len(fields) == 5 and fields[4].strip():
        target: Path | None = _beside(folder, fields[4].strip())
    else:
        default = folder / "wavs" / f"{utt}.wav"  # where upstream's Seed-TTS lists keep the ground truth
        target = default if default.is_file() else None
    return Prompt(utt, _beside(folder, ref_audio), ref_text, text, target, number)


def _parse_librispeech(line: str, number: int, _folder: Path, root: Path | None) -> Prompt | str:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 6:
        return f"expected 6 tab-separated fields (ref_utt, ref_seconds, ref_text, gen_utt, gen_seconds, gen_text), found {len(fields)}"
    ref_utt, _, ref_text, gen_utt, _, gen_text = (field.strip() for field in fields)
    assert root is not None
    try:
        return Prompt(gen_utt, _librispeech_path(root, ref_utt), ref_text, gen_text, _librispeech_path(root, gen_utt), number)
    except ValueError:
        return f"utterance ids must look like SPEAKER-CHAPTER-NUMBER, got {ref_utt!r} / {gen_utt!r}"


def _librispeech_path(root: Path, utt: str) -> Path:
    speaker, chapter, _ = utt.split("-")
    return root / speaker / chapter / f"{utt}.flac"


def _beside(folder: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _listed(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    return shown + (f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else "")


def load_prompts(settings, data=None) -> list[Prompt]:  # noqa: ANN001 (EvalConfig, DataConfig | None)
    """``settings.prompt_file`` when set (an EvalConfig), else the validation prompts of ``data`` (a DataConfig)."""
    if settings.prompt_file:
        return read_prompt_list(settings.prompt_file, settings.prompt_format, settings.audio_root, settings.num_prompts)
    if data is None:
        raise PromptListError(
            "held-out prompts come from the data set the model was trained on, and this checkpoint records none; "
            "give a prompt list with eval.prompt_file=LIST (Seed-TTS meta.lst or LibriSpeech-PC)"
        )
    prompts = validation_prompts(data, settings.num_prompts, settings.seed)
    if not prompts:
        raise PromptListError(f"the validation split of {data.path} is empty; raise data.val_fraction or give eval.prompt_file=LIST")
    return prompts
