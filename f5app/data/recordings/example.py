"""A long recording made of the human speech f5-tts ships, to try ``data=recordings`` on (and test it).

    python -m f5app.data.recordings.example DIR [--minutes M] [--sample-rate 44100] [--channels 2]
    python -m f5app.data.recordings.example DIR --voices stella,chinese [--turns 7] [--overlap 3] [--snr 30]

writes ``DIR/example_recording.flac``: f5-tts's four English recordings (``basic_ref_en.wav``,
``multi/main.flac``, ``town.flac``, ``country.flac``) joined with silences, a pause short enough
to join two of them into one passage longer than a clip may be, and bursts of noise, over a faint
noise floor, at another sample rate and in stereo. ``--minutes`` repeats them (random order,
pauses and levels, seeded) until the recording is that long. It is written block by block, so
an hour costs no more memory than a minute.

``--voices`` writes ``DIR/conversation.wav`` instead: those voices taking turns (the first two
of every three), each turn at its own level, with white noise, and ``--overlap`` seconds of two
voices at once (:func:`write_conversation`); it prints who speaks when.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile

#: name -> (file under f5_tts/infer/examples, (start, end) of its speech in seconds, its words)
#: The bounds are silero-vad's speech timestamps of each file widened by 0.1 s; the texts are
#: the passages read ("Please call Stella", "The Rainbow Passage"); country.flac's reader
#: departs from hers, so it has none.
SPEECH = {
    "nature": ("basic/basic_ref_en.wav", (0.4, 5.1), "Some call me nature, others call me mother nature."),
    "stella": ("multi/main.flac", (0.7, 6.1),
               "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob."),
    "rainbow": ("multi/town.flac", (0.8, 9.2),
                "The difference in the rainbow depends considerably upon the size of the drops, and the width of the "
                "colored band increases as the size of the drops increases."),
    "country": ("multi/country.flac", (0.8, 7.4), None),
    "chinese": ("basic/basic_ref_zh.wav", (0.15, 6.6), "对，这就是我，万人敬仰的太乙真人。"),
}
ENGLISH = ("nature", "stella", "rainbow", "country")
#: ~40 s: four utterances; rainbow and country joined by a 0.5 s pause into a 15.5 s passage.
STANDARD = (
    ("silence", 1.0), ("speech", "nature"), ("silence", 1.5), ("speech", "stella"), ("noise", 2.0),
    ("speech", "rainbow"), ("silence", 0.5), ("speech", "country"), ("silence", 1.5), ("noise", 1.5), ("silence", 1.0),
)
NOISE_RMS = 0.02  # the noise bursts (-34 dBFS)
FLOOR_RMS = 0.001  # under everything (-60 dBFS): no stretch is digital silence
FILE_NAME = "example_recording.flac"
CONVERSATION_FILE = "conversation.wav"


@dataclass(frozen=True)
class Utterance:
    name: str
    start: float  # seconds in the written file
    end: float
    text: str | None


def examples_dir() -> Path:
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the f5-tts package is not installed; it ships the recordings this example is made of")
    return Path(next(iter(spec.submodule_search_locations))) / "infer" / "examples"


def load_speech(sample_rate: int) -> dict[str, np.ndarray]:
    """Each shipped recording, cut to its speech bounds, mono, at ``sample_rate``."""
    import soxr  # deferred: soxr is an optional package (the [recordings] extra); data=csv_wavs imports this module without it

    out = {}
    for name, (relative, (start, end), _) in SPEECH.items():
        wav, rate = soundfile.read(str(examples_dir() / relative), dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)[int(start * rate):int(end * rate)]
        out[name] = soxr.resample(wav, rate, sample_rate).astype(np.float32) if rate != sample_rate else wav
    return out


def looped(minutes: float, seed: int = 0) -> Iterator[tuple[str, object]]:
    """Layout items for a recording of about ``minutes``: the four utterances over and over."""
    rng = np.random.default_rng(seed)
    names = list(ENGLISH)
    lengths = {name: bounds[1] - bounds[0] for name, (_, bounds, _) in SPEECH.items()}
    total = 0.0
    yield ("silence", 1.0)
    while total < minutes * 60:
        name = names[int(rng.integers(len(names)))]
        yield ("speech", (name, float(rng.uniform(-6.0, 0.0))))
        gap = float(rng.choice([0.3, 0.5, 0.8, 1.2, 2.0]))
        yield ("noise", 1.5) if rng.random() < 0.1 else ("silence", gap)
        total += lengths[name] + gap


def write(path: Path, layout=STANDARD, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> list[Utterance]:  # noqa: ANN001
    """Write the recording ``layout`` describes to ``path``; return where each utterance is."""

    speech = load_speech(sample_rate)
    rng = np.random.default_rng(seed)
    utterances: list[Utterance] = []
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with soundfile.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels) as out:
        for kind, value in layout:
            if kind == "speech":
                name, gain_db = value if isinstance(value, tuple) else (value, 0.0)
                signal = speech[name] * np.float32(10 ** (gain_db / 20))
                utterances.append(Utterance(name, written / sample_rate, (written + len(signal)) / sample_rate, SPEECH[name][2]))
            elif kind == "noise":
                signal = (NOISE_RMS * rng.standard_normal(int(value * sample_rate))).astype(np.float32)
            elif kind == "silence":
                signal = np.zeros(int(value * sample_rate), dtype=np.float32)
            else:
                raise ValueError(f"unknown layout item {kind!r}")
            block = np.stack([signal * (1.0 - 0.1 * channel) for channel in range(channels)], axis=1)
            block += (FLOOR_RMS * rng.standard_normal(block.shape)).astype(np.float32)
            out.write(block)
            written += len(signal)
    return utterances


@dataclass(frozen=True)
class Conversation:
    """Where each voice speaks in a recording of several (``overlaps``: two voices at once)."""

    utterances: list[Utterance]  # one voice each; ``name`` is the voice
    overlaps: list[Utterance]  # ``name`` is "a+b"
    seconds: float

    def main_voice(self) -> str:
        spoken: dict[str, float] = {}
        for utterance in self.utterances:
            spoken[utterance.name] = spoken.get(utterance.name, 0.0) + utterance.end - utterance.start
        return max(spoken, key=spoken.__getitem__)


def write_conversation(path: Path, voices: list[str], turns: int, seed: int = 0, snr_db: float | None = 30.0,
                       overlap_seconds: float = 0.0, sample_rate: int = 24000) -> Conversation:
    """A recording of ``voices`` taking ``turns`` turns, each at its own level (0 to -9 dB) with
    pauses of 0.4-1.2 s: the first voice takes two turns of every three (it speaks most), the
    others the third in a seeded order; ``overlap_seconds`` > 0 adds, in the middle, that
    long of two voices at once; white noise at ``snr_db`` below the speech (None: none).
    """
    speech = load_speech(sample_rate)
    rng = np.random.default_rng(seed)
    others = [voices[1 + int(i)] for i in rng.permutation(len(voices) - 1)]
    order = [others[(turn // 3) % len(others)] if turn % 3 == 1 else voices[0] for turn in range(turns)]
    pieces: list[np.ndarray] = [np.zeros(int(0.5 * sample_rate), dtype=np.float32)]
    utterances: list[Utterance] = []
    overlaps: list[Utterance] = []
    at = len(pieces[0])

    def add(signal: np.ndarray, name: str, into: list[Utterance]) -> None:
        nonlocal at
        into.append(Utterance(name, at / sample_rate, (at + len(signal)) / sample_rate, None))
        pieces.append(signal.astype(np.float32))
        at += len(signal)
        pause = np.zeros(int(float(rng.uniform(0.4, 1.2)) * sample_rate), dtype=np.float32)
        pieces.append(pause)
        at += len(pause)

    for turn, voice in enumerate(order):
        add(speech[voice] * np.float32(10 ** (float(rng.uniform(-9.0, 0.0)) / 20)), voice, utterances)
        if overlap_seconds > 0 and turn == turns // 2 - 1:
            other = next(v for v in voices if v != voice)
            length = int(overlap_seconds * sample_rate)
            a, b = speech[voice][-length:], speech[other][:length]
            add((a / _rms(a) + b / _rms(b)) * np.float32(0.05), f"{voice}+{other}", overlaps)
    wav = np.concatenate(pieces)
    if snr_db is not None:
        speech_rms = _rms(np.concatenate([wav[int(u.start * sample_rate):int(u.end * sample_rate)] for u in utterances]))
        wav = wav + (speech_rms * 10 ** (-snr_db / 20) * rng.standard_normal(len(wav))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate)
    return Conversation(utterances, overlaps, len(wav) / sample_rate)


def _shared(a: tuple[float, float], b: Utterance) -> float:
    return max(0.0, min(a[1], b.end) - max(a[0], b.start))


def voices_of(conversation: Conversation, clips: list[tuple[float, float, str]], overlap_label: str = "overlap") -> dict[str, str]:
    """Speaker id -> the voice its clips hold most of (one id per voice, largest share first)."""
    voices = sorted({u.name for u in conversation.utterances})
    ids = sorted({label for _, _, label in clips if label != overlap_label})
    held = {(label, voice): sum(_shared((s, e), u) for s, e, lab in clips if lab == label for u in conversation.utterances if u.name == voice)
            for label in ids for voice in voices}
    found: dict[str, str] = {}
    for (label, voice), seconds in sorted(held.items(), key=lambda item: -item[1]):
        if seconds > 0 and label not in found and voice not in found.values():
            found[label] = voice
    return found


def score_clips(conversation: Conversation, clips: list[tuple[float, float, str]], overlap_label: str = "overlap") -> dict[str, float]:
    """How well ``clips`` ((start, end, speaker id) in seconds; ids ranked, ``S1`` the main one)
    follow who spoke when in ``conversation``.

    - ``accuracy``: of the clips' time in one voice's speech, the share whose clip carries that
      voice's id (each id is matched to the voice it holds most of, one id per voice; clips
      marked as overlap count as wrong); ``assigned_accuracy``: the same of the clips given a
      speaker; ``left_out``: the share of one voice's speech in clips marked as overlap;
    - ``main_pure``: 1.0 when ``S1``'s clips are the main voice's and hold under 0.25 s of any
      other voice (or of overlapping speech), else 0.0;
    - ``overlap_left_out``: of the overlapping speech, the share in no clip of a single speaker
      (1.0 when there is none).
    """
    voice_of = voices_of(conversation, clips, overlap_label)
    total = sum(_shared((s, e), u) for s, e, _ in clips for u in conversation.utterances)
    right = sum(_shared((s, e), u) for s, e, label in clips for u in conversation.utterances if voice_of.get(label) == u.name)
    main = conversation.main_voice()
    foreign = sum(_shared((s, e), u) for s, e, label in clips if label == "S1" for u in conversation.utterances if u.name != main)
    foreign += sum(_shared((s, e), o) for s, e, label in clips if label == "S1" for o in conversation.overlaps)
    overlap_total = sum(o.end - o.start for o in conversation.overlaps)
    overlap_in_clips = sum(_shared((s, e), o) for s, e, label in clips if label != overlap_label for o in conversation.overlaps)
    assigned = sum(_shared((s, e), u) for s, e, label in clips if label != overlap_label for u in conversation.utterances)
    return {
        "accuracy": right / total if total else 0.0,
        "assigned_accuracy": right / assigned if assigned else 0.0,
        "left_out": 1.0 - assigned / total if total else 0.0,
        "main_pure": float(voice_of.get("S1") == main and foreign < 0.25),
        "overlap_left_out": 1.0 - overlap_in_clips / overlap_total if overlap_total else 1.0,
    }


def _rms(signal: np.ndarray) -> np.float32:
    return np.float32(max(1e-6, float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f5app.data.recordings.example", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write example_recording.flac (created if needed)")
    parser.add_argument("--minutes", type=float, help="repeat the speech until the recording is this long")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voices", help=f"comma-separated voices ({', '.join(SPEECH)}): write {CONVERSATION_FILE}, "
                        "a conversation in which the first speaks most, instead")
    parser.add_argument("--turns", type=int, default=7, help="with --voices: how many turns")
    parser.add_argument("--overlap", type=float, default=0.0, help="with --voices: seconds of two voices at once, in the middle")
    parser.add_argument("--snr", type=float, default=30.0, help="with --voices: white noise this many dB below the speech")
    args = parser.parse_args(argv)
    if args.voices:
        voices = [voice.strip() for voice in args.voices.split(",") if voice.strip()]
        unknown = [voice for voice in voices if voice not in SPEECH]
        if unknown or len(voices) < 2:
            parser.error(f"--voices takes two or more of {', '.join(SPEECH)} (got {args.voices})")
        path = args.folder / CONVERSATION_FILE
        found = write_conversation(path, voices, args.turns, args.seed, args.snr, args.overlap, args.sample_rate)
        for utterance in sorted(found.utterances + found.overlaps, key=lambda u: u.start):
            print(f"{utterance.start:7.2f}-{utterance.end:7.2f} s  {utterance.name}")
        print(f"{path}: {len(voices)} voices, {found.seconds:.1f} s, {found.main_voice()} speaks most")
        return 0
    layout = looped(args.minutes, args.seed) if args.minutes else STANDARD
    path = args.folder / FILE_NAME
    utterances = write(path, layout, args.sample_rate, args.channels, args.seed)
    print(f"{path}: {len(utterances)} utterances, {utterances[-1].end / 60:.1f} min, {args.sample_rate} Hz, {args.channels} channel(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
