"""data=recordings end to end: read -> segment (with who speaks when) -> normalise -> quality -> transcribe -> review, then the
csv_wavs preparation of the folder that produced (one preparation path for every data set).

Layout of ``data.work_dir`` (default ``<data.path>/f5app_clips``; nothing in ``data.path`` is
ever modified):

    metadata.csv        the kept clips, ``audio_file|text``: edit it and run again
    edits.json          your edits, as taken from metadata.csv (applied on every run)
    review.html         every clip with its text, speaker, confidence and flags; durations.png; review.json
    speakers.html       each speaker found, with a short sample (speakers/S1.wav, ...), speech time and clips
    wavs/               the clips (mono, the model's rate, loudness-normalised)
    rejected/           the clips dropped for clipping, loudness or length, to listen to
    split_groups.json   clips that hold the same audio: each group stays on one side of the split
    vocab_extended.txt  the starting vocabulary plus your characters (only when some are missing)
    cache/              each step's results by content key; a stopped run resumes from here
    .f5app_prepared/    what training reads (data.prepared_dir), with split.json

Each step shows a progress bar (on a terminal) and caches per item, so Ctrl-C and the same
command again carry on where it stopped.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import soundfile
from tqdm import tqdm

from f5app.config import AsrConfig, DataConfig, RecordingsDataConfig
from f5app.data.prepare import DataError, PreparedData, folder_lock, prepare, prepared_dir_for
from f5app.data.recordings import normalise, read, report, review, segment, transcribe
from f5app.data.recordings import duplicates, speakers
from f5app.data.recordings.cache import StepCache, content_key
from f5app.data.recordings.read import Problem, Recording
from f5app.data.recordings.segment import Span
from f5app.data.split_groups import write_groups
from f5app.errors import first_line
from f5app.files import atomic_write, read_json_object, write_json_atomic
from f5app.speech.quality import Dnsmos
from f5app.speech.text import normalize
from f5app.text.normalise import Normaliser

log = logging.getLogger(__name__)

DEFAULT_WORK_DIR = "f5app_clips"
STEPS = ("read", "segment", "speakers", "normalise", "quality", "transcribe", "review")
DNSMOS_VERSION = 1  # bump when the scores would change (f5app/speech/quality.py)


@dataclass
class StepStats:
    items: int = 0
    cached: int = 0
    seconds: float = 0.0  # wall
    cpu_seconds: float = 0.0  # this process's CPU time, every thread (a busy shared machine inflates only the wall)
    audio_seconds: float = 0.0  # audio this step handled (the recordings, or the clips)
    input_seconds: float = 0.0  # the recordings' length, for the real-time factors

    def to_dict(self) -> dict[str, Any]:
        def per(seconds: float) -> float | None:
            return self.input_seconds / seconds if self.items and seconds > 0 and self.input_seconds else None

        return {**asdict(self), "computed": self.items - self.cached, "realtime": per(self.seconds), "realtime_cpu": per(self.cpu_seconds)}


class _Clock:
    """Wall and CPU time since it was made, written into a StepStats by :meth:`stop`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, stats: StepStats) -> None:
        stats.seconds = time.perf_counter() - self.wall
        stats.cpu_seconds = time.process_time() - self.cpu


@dataclass
class Clip:
    """One planned clip and what each step found about it."""

    recording: Recording
    read_key: str
    span: Span
    name: str
    measured: dict[str, Any] | None = None  # normalise's record
    asr: dict[str, Any] | None = None  # transcribe's record
    text: str = ""
    text_source: str = "asr"
    agreement: float | None = None
    dropped: str | None = None
    dnsmos: dict[str, float] | None = None  # quality step's DNSMOS scores
    duplicates: list[dict[str, Any]] | None = None  # the clips holding the same audio
    speaker: str | None = None  # S1, S2, ... (ranked by speech time) or speakers.OVERLAP

    @property
    def audio_file(self) -> str | None:
        if self.measured is None:
            return None
        return f"{self.measured['folder']}/{self.measured['file']}"


def work_dir_for(data: RecordingsDataConfig) -> Path:
    if data.work_dir:
        return Path(data.work_dir).expanduser().resolve()
    root = Path(data.path).expanduser().resolve()
    return root / DEFAULT_WORK_DIR if not root.is_file() else root.parent / f"{root.stem}_{DEFAULT_WORK_DIR}"


def prepare_recordings(data: RecordingsDataConfig, progress: bool = True, normaliser: Optional[Normaliser] = None) -> PreparedData:
    """Cut, transcribe and review the recordings of ``data.path``; return the prepared clips.

    Raises DataError (a UserError) for a missing folder, a folder without audio, settings that
    cannot work, or when no recording gives a usable clip (after writing the review that says why).
    """
    _check(data)
    root = Path(data.path).expanduser().resolve()
    if not root.exists():
        raise DataError(f"data.path={root} does not exist; point it at the folder holding your recordings")
    work = work_dir_for(data)
    folder = root if root.is_dir() else root.parent
    if root == work or work in root.parents or any((f / read.WORK_DIR_MARKER).exists() for f in (folder, *folder.parents)):
        raise DataError(f"data.path={root} is (or is inside) a work folder of data=recordings; point it at your recordings")
    paths, problems = read.find_audio(root, [work, prepared_dir_for(_csv_settings(data, work))], data.follow_links)
    if not paths and not problems:
        raise DataError(
            f"no audio files in {root} (looked for {', '.join(read.AUDIO_SUFFIXES)}, in subfolders too); "
            "point data.path at the folder holding your recordings"
        )
    try:
        (work / "cache").mkdir(parents=True, exist_ok=True)
        (work / read.WORK_DIR_MARKER).touch()
    except OSError as error:
        raise DataError(f"cannot create {work} ({error.strerror}); set data.work_dir to a folder you can write") from None
    with folder_lock(work / "cache" / "run"):
        return _Run(data, root, work, progress, normaliser).run(paths, problems)


def _check(data: RecordingsDataConfig) -> None:
    problems = []
    if not 0 < data.min_seconds < data.max_seconds:
        problems.append(f"data.min_seconds={data.min_seconds} and data.max_seconds={data.max_seconds}: need 0 < min_seconds < max_seconds")
    if data.pad_seconds < 0 or data.max_pause_seconds <= 0:
        problems.append("data.pad_seconds must be >= 0 and data.max_pause_seconds > 0")
    if not 0 < data.vad_threshold < 1:
        problems.append(f"data.vad_threshold={data.vad_threshold} must be between 0 and 1")
    if data.sample_rate < 8000:
        problems.append(f"data.sample_rate={data.sample_rate} is too low (the model's rate: 24000)")
    if data.max_duration < data.max_seconds:
        problems.append(f"data.max_duration={data.max_duration} is below data.max_seconds={data.max_seconds}: every long clip would be skipped")
    wrong = speakers.check_setting(data.speaker)
    if wrong:
        problems.append(wrong)
    if data.num_speakers is not None and data.num_speakers < 1:
        problems.append(f"data.num_speakers={data.num_speakers} must be null (found from the voices) or at least 1")
    if problems:
        raise DataError("; ".join(problems))


class _Run:
    def __init__(self, data: RecordingsDataConfig, root: Path, work: Path, progress: bool, normaliser: Optional[Normaliser] = None):
        self.normaliser = normaliser  # text_norm.apply_to_training: the clips' texts as inference says them
        self.data = data
        self.root = root
        self.work = work
        self.cache_dir = work / "cache"
        self.show = progress and sys.stderr.isatty()
        self.asr_cfg = data.asr if data.asr is not None else AsrConfig()
        self.asr = transcribe.LazyTranscriber(self.asr_cfg)
        self.asr_id = transcribe.asr_identity(self.asr_cfg)
        self.steps = {name: StepStats() for name in STEPS}
        self.problems: list[Problem] = []
        self.read_info: dict[str, dict[str, Any]] = {}  # read key -> decode record
        self.seg = segment.Settings(data.min_seconds, data.max_seconds, data.max_pause_seconds, data.pad_seconds, data.vad_threshold)

    # ------------------------------------------------------------------ the run
    def run(self, paths: list[Path], problems: list[Problem]) -> PreparedData:
        started, cpu_started = time.perf_counter(), time.process_time()
        self.problems = list(problems)
        recordings = self._identify(paths)
        decoded = self._read(recordings)
        clips = self._segment(decoded)
        self._normalise(clips)
        self._keep_speakers(clips)
        prints = self._quality(clips)
        self._transcribe(clips)
        self._note_empty_recordings(decoded, clips)
        review_clock = _Clock()
        kept = [clip for clip in clips if clip.dropped is None]
        merged = review.merge_metadata(self.work, self.cache_dir, [(clip.audio_file, clip.text) for clip in kept])  # type: ignore[misc]
        self._forget_stale_clips(clips, merged)
        self._find_duplicates(clips, merged, prints)
        prepared = None
        error: DataError | None = None
        val: set[str] = set()
        if merged.rows:
            try:
                prepared = prepare(self._csv_settings(), progress=self.show, normaliser=self.normaliser)
                val = self._held_out(prepared)
            except DataError as failure:
                error = failure
        self.steps["review"] = StepStats(items=len(merged.rows), input_seconds=self._input_seconds(decoded))
        review_clock.stop(self.steps["review"])
        review_path = self._write_review(decoded, clips, merged, prepared, val, time.perf_counter() - started, time.process_time() - cpu_started)
        if error is not None:
            raise DataError(f"{error}; the review is {review_path}") from None
        if prepared is None:
            raise DataError(
                f"no usable speech in {self.root}: {len(self.problems)} recording(s) gave no clips "
                f"({_count_reasons(self.problems)}){' and every clip was dropped' if clips else ''}; see {review_path}"
            )
        log.info(
            "recordings: %d clips kept (%d dropped) from %d recording(s); review: %s; edit %s and run again to change texts",
            len(merged.rows), sum(1 for clip in clips if clip.dropped), len(decoded), review_path, self.work / review.METADATA_FILE,
        )
        return replace(prepared, review_path=review_path)

    # ------------------------------------------------------------------ 1. read
    def _identify(self, paths: list[Path]) -> list[Recording]:
        hashes_path = self.cache_dir / "sources.json"
        hashes = read.load_hashes(hashes_path)
        recordings, duplicates = read.identify(paths, self.root, hashes)
        read.save_hashes(hashes_path, hashes)
        self.problems += duplicates
        self.known, problems = transcribe.known_texts(self.root, recordings, self.data.follow_links)
        self.problems += problems
        return recordings

    def _read(self, recordings: list[Recording]) -> list[tuple[Recording, str]]:
        cache = StepCache(self.cache_dir, "read")
        stats = self.steps["read"]
        clock = _Clock()
        headers: dict[str, float] = {}
        for recording in recordings:
            try:
                header = read.describe(recording.path)
                headers[recording.sha256] = header["source_frames"] / max(1, header["source_rate"])
            except Exception:  # noqa: BLE001 (decoding reports it below)
                headers[recording.sha256] = 0.0
        decoded: list[tuple[Recording, str]] = []
        with self._bar(self._label("read"), sum(headers.values()), "s") as bar:
            for recording in recordings:
                key = content_key("read", read.READ_VERSION, recording.sha256, self.data.sample_rate)
                wav = cache.file(key, ".wav")
                record = cache.get(key)
                stats.items += 1
                if record is not None and (wav.is_file() or "failed" in record):
                    stats.cached += 1
                    bar.update(headers[recording.sha256])
                else:
                    try:
                        record = cache.put(key, read.decode(recording.path, wav, self.data.sample_rate, bar.update))
                    except Exception as failure:  # noqa: BLE001 (soundfile raises many types for bad files)
                        detail = first_line(failure)
                        # the same bytes fail the same way: remembered until the file changes
                        record = cache.put(key, {"failed": "empty" if "no samples" in detail else "unreadable", "detail": detail})
                if "failed" in record:
                    self.problems.append(Problem(recording.name, record["failed"], f"cannot decode it: {record['detail']}"))
                    continue
                self.read_info[key] = record
                stats.audio_seconds += record["seconds"]
                decoded.append((recording, key))
        clock.stop(stats)
        stats.input_seconds = self._input_seconds(decoded)
        return decoded

    # ------------------------------------------------------------------ 2. segment
    def _segment(self, decoded: list[tuple[Recording, str]]) -> list[Clip]:
        """Speech regions of every recording, who speaks when across them all, then the clips:
        cut inside one speaker's turns (a speaker change is always a cut)."""
        heard = self._speech(decoded)
        turns = self._speakers(heard)
        words_cache = StepCache(self.cache_dir, "words")
        read_cache = StepCache(self.cache_dir, "read")
        stats = self.steps["segment"]
        clock = _Clock()
        clips: list[Clip] = []
        names: set[str] = set()
        for (recording, read_key, probabilities, _), found in zip(heard, turns):
            info = self.read_info[read_key]
            wav = read_cache.file(read_key, ".wav")
            pieces: list[tuple[segment.Piece, str]] = []
            for piece, speaker in speakers.plan_turns(found, self.seg):
                if not piece.too_long:
                    pieces.append((piece, speaker))
                    continue
                for window in segment.windows(piece, probabilities):  # the ASR hears at most a few minutes at once
                    words = self._words(words_cache, read_key, wav, window)
                    pieces += [(cut, speaker) for cut in segment.word_cuts(window, words, self.seg, probabilities)]
            base = _unique(_slug(recording.name), names)
            for span, (_, speaker) in zip(segment.spans([piece for piece, _ in pieces], info["frames"] / info["sample_rate"], self.seg), pieces):
                clips.append(Clip(recording, read_key, span, f"{base}_{_stamp(span.start)}", dropped=span.dropped, speaker=speaker))
        before = (stats.seconds, stats.cpu_seconds)
        clock.stop(stats)
        stats.seconds += before[0]
        stats.cpu_seconds += before[1]
        return clips

    def _speech(self, decoded: list[tuple[Recording, str]]) -> list[tuple[Recording, str, np.ndarray, list[segment.Region]]]:
        """silero-vad's speech probabilities and regions of each recording that has speech."""
        cache = StepCache(self.cache_dir, "vad")
        read_cache = StepCache(self.cache_dir, "read")
        stats = self.steps["segment"]
        clock = _Clock()
        vad: segment.Vad | None = None
        heard = []
        with self._bar(self._label("segment"), self._input_seconds(decoded), "s") as bar:
            for recording, read_key in decoded:
                info = self.read_info[read_key]
                wav = read_cache.file(read_key, ".wav")
                key = content_key("vad", segment.VAD_VERSION, read_key)
                probabilities = cache.array(key)
                stats.items += 1
                if probabilities is not None:
                    stats.cached += 1
                    bar.update(info["seconds"])
                else:
                    vad = vad or segment.Vad()
                    probabilities = segment.speech_probabilities(vad, wav, info["sample_rate"], _scaled(bar.update, info)).astype(np.float32, copy=False)
                    cache.put_array(key, probabilities, {"frames": int(len(probabilities)), "frame_seconds": segment.FRAME_SECONDS})
                stats.audio_seconds += info["seconds"]
                regions = self._regions(cache, key, probabilities, info["frames"] / info["sample_rate"])
                if not regions:
                    self.problems.append(Problem(recording.name, "no_speech", "no speech found (silero-vad heard none)"))
                    continue
                heard.append((recording, read_key, probabilities, regions))
        clock.stop(stats)
        stats.input_seconds = self._input_seconds(decoded)
        return heard

    def _speakers(self, heard: list[tuple[Recording, str, np.ndarray, list[segment.Region]]]) -> list[list[speakers.Turn]]:
        """Who speaks when in each recording: window embeddings (cached per recording), then the
        clustering of every recording's windows together (cheap: done on every run, so changing
        data.speaker or data.num_speakers never embeds again)."""
        cache = StepCache(self.cache_dir, "speakers")
        read_cache = StepCache(self.cache_dir, "read")
        stats = self.steps["speakers"]
        clock = _Clock()
        embedder = None
        found: list[speakers.Heard] = []
        with self._bar(self._label("speakers"), sum(self.read_info[key]["seconds"] for _, key, _, _ in heard), "s") as bar:
            for _, read_key, probabilities, regions in heard:
                info = self.read_info[read_key]
                key = content_key("speakers", speakers.SPEAKERS_VERSION, read_key, [[r.start, r.end] for r in regions])
                stored = cache.array(key)
                stats.items += 1
                if stored is not None:
                    stats.cached += 1
                    windows = speakers.Windows.from_array(stored)
                else:
                    embedder = embedder or speakers.load_embedder()
                    windows = speakers.embed_regions(embedder, read_cache.file(read_key, ".wav"), info["sample_rate"], regions)
                    cache.put_array(key, windows.to_array(), {"windows": len(windows)})
                stats.audio_seconds += info["seconds"]
                bar.update(info["seconds"])
                found.append(speakers.Heard(windows, regions, probabilities))
        self.voices, turns, self.window_labels = speakers.diarise(found, self.data.num_speakers)
        self.heard = [(recording.name, read_key, h) for (recording, read_key, _, _), h in zip(heard, found)]
        self.kept_speakers = speakers.select(self.data.speaker, self.voices.ids)
        clock.stop(stats)
        stats.input_seconds = self.steps["segment"].input_seconds
        return turns

    def _regions(self, cache: StepCache, vad_key: str, probabilities: np.ndarray, seconds: float) -> list[segment.Region]:
        """silero's speech regions, cached too: a fully cached run never imports silero (nor torch)."""
        key = content_key("regions", vad_key, self.data.vad_threshold, segment.MIN_SPEECH_MS, segment.MIN_PAUSE_MS)
        record = cache.get(key)
        if record is None:
            found = segment.speech_regions(probabilities, seconds, self.data.vad_threshold)
            record = cache.put(key, {"regions": [[region.start, region.end] for region in found]})
        return [segment.Region(start, end) for start, end in record["regions"]]

    def _words(self, cache: StepCache, read_key: str, wav: Path, piece: segment.Piece) -> list[tuple[float, float]]:
        key = content_key("words", transcribe.TRANSCRIBE_VERSION, read_key, piece.start, piece.end, self.asr_id)
        record = cache.get(key)
        if record is None:
            record = cache.put(key, {"words": transcribe.word_times(self.asr, wav, piece.start, piece.end)})
        return [tuple(word) for word in record["words"]]  # type: ignore[misc]

    # ------------------------------------------------------------------ 3. normalise
    def _normalise(self, clips: list[Clip]) -> None:
        cache = StepCache(self.cache_dir, "normalise")
        read_cache = StepCache(self.cache_dir, "read")
        stats = self.steps["normalise"]
        clock = _Clock()
        settings = normalise.Settings(self.data.loudness_lufs, self.data.min_loudness_lufs, self.data.max_clipped_fraction, self.data.min_seconds)
        todo = [clip for clip in clips if clip.dropped is None]
        with self._bar(self._label("normalise"), len(todo), "clip") as bar:
            for clip in todo:
                key = content_key("normalise", normalise.NORMALISE_VERSION, clip.read_key, clip.span.start, clip.span.end,
                                  clip.name, asdict(settings))
                record = cache.get(key)
                stats.items += 1
                if record is not None and _file_matches(self.work / record["folder"] / record["file"], record):
                    stats.cached += 1
                else:
                    fraction = read.clipped_fraction(self.read_info[clip.read_key], clip.span.start, clip.span.end)
                    record = cache.put(key, normalise.normalise_clip(
                        read_cache.file(clip.read_key, ".wav"), clip.span, fraction, settings,
                        self.work / "wavs" / f"{clip.name}.wav", self.work / "rejected" / f"{clip.name}.wav",
                    ))
                clip.measured = record
                clip.dropped = record["dropped"]
                stats.audio_seconds += record["seconds"]
                bar.update(1)
        clock.stop(stats)
        stats.input_seconds = self.steps["read"].input_seconds

    def _keep_speakers(self, clips: list[Clip]) -> None:
        """Leave out overlapping speech and the speakers data.speaker does not keep (made, listed, not trained on)."""
        for clip in clips:
            if clip.dropped is not None or clip.speaker is None:
                continue
            if clip.speaker == speakers.OVERLAP:
                clip.dropped = "overlapping_speech"
            elif clip.speaker not in self.kept_speakers:
                clip.dropped = "other_speaker"

    # ------------------------------------------------------------------ 4. quality
    def _quality(self, clips: list[Clip]) -> dict[str, duplicates.Fingerprint]:
        """DNSMOS of every made clip (those under data.min_dnsmos are dropped) and its audio fingerprint."""
        scores, prints_cache = StepCache(self.cache_dir, "dnsmos"), StepCache(self.cache_dir, "fingerprint")
        stats = self.steps["quality"]
        clock = _Clock()
        dnsmos: Dnsmos | None = None
        prints: dict[str, duplicates.Fingerprint] = {}
        todo = [clip for clip in clips if clip.dropped is None and clip.measured is not None]
        with self._bar(self._label("quality"), len(todo), "clip") as bar:
            for clip in todo:
                assert clip.measured is not None and clip.audio_file is not None
                score_key = content_key("dnsmos", DNSMOS_VERSION, clip.measured["sha256"])
                print_key = content_key("fingerprint", duplicates.FINGERPRINT_VERSION, clip.measured["sha256"])
                record, stored = scores.get(score_key), prints_cache.array(print_key)
                stats.items += 1
                if record is not None and stored is not None:
                    stats.cached += 1
                    prints[clip.audio_file] = duplicates.Fingerprint.from_arrays(stored)
                else:
                    wav, rate = soundfile.read(str(self.work / clip.audio_file), dtype="float32", always_2d=False)
                    if record is None:
                        dnsmos = dnsmos or Dnsmos()
                        record = scores.put(score_key, dnsmos.score(wav, rate).to_dict())
                    found = duplicates.fingerprint(wav, rate)
                    prints_cache.put_array(print_key, found.to_arrays(), {"hashes": int(len(found.hashes))})
                    prints[clip.audio_file] = found
                clip.dnsmos = record
                if record["ovrl"] < self.data.min_dnsmos:
                    clip.dropped = "low_dnsmos"
                stats.audio_seconds += clip.measured["seconds"]
                bar.update(1)
        clock.stop(stats)
        stats.input_seconds = self.steps["read"].input_seconds
        return prints

    def _find_duplicates(self, clips: list[Clip], merged: review.Merged, prints: dict[str, duplicates.Fingerprint]) -> None:
        """Mark the kept clips that hold the same audio, and write their groups for the split."""
        listed = {name for name, _ in merged.rows}
        kept = {clip.audio_file: clip for clip in clips if clip.dropped is None and clip.audio_file in listed and clip.audio_file in prints}
        matches = duplicates.find_matches({name: prints[name] for name in kept})
        for match in matches:
            for this, other in ((match.first, match.second), (match.second, match.first)):
                found = kept[this].duplicates = kept[this].duplicates or []
                found.append({"audio_file": other, "source": kept[other].recording.name, "score": match.score,
                              "shared_seconds": match.shared_seconds})
        write_groups(self.work, duplicates.groups(list(kept), matches))

    # ------------------------------------------------------------------ 5. transcribe
    def _transcribe(self, clips: list[Clip]) -> None:
        cache = StepCache(self.cache_dir, "transcribe")
        stats = self.steps["transcribe"]
        clock = _Clock()
        made = [clip for clip in clips if clip.measured is not None]
        by_recording: dict[str, list[Clip]] = {}
        for clip in made:
            by_recording.setdefault(clip.recording.name, []).append(clip)
        for name, group in by_recording.items():
            if name in self.known and len(group) == 1:  # the whole transcript is this clip's: no ASR
                group[0].text, group[0].text_source = self.known[name]
        todo = [clip for clip in made if clip.text_source == "asr" and (clip.dropped is None or clip.recording.name in self.known)]
        with self._bar(self._label("transcribe"), len(todo), "clip") as bar:
            for clip in todo:
                assert clip.measured is not None
                key = content_key("asr", transcribe.TRANSCRIBE_VERSION, clip.measured["sha256"], self.asr_id)
                record = cache.get(key)
                stats.items += 1
                if record is not None:
                    stats.cached += 1
                else:
                    record = cache.put(key, transcribe.transcribe_clip(self.asr, self.work / clip.audio_file))  # type: ignore[operator]
                clip.asr, clip.text = record, record["text"]
                stats.audio_seconds += clip.measured["seconds"]
                bar.update(1)
        for name, group in by_recording.items():
            if name in self.known and len(group) > 1:
                text, origin = self.known[name]
                shared = transcribe.share_text(text, [clip.text for clip in group], lambda word: normalize(word, self.asr_cfg.language))
                for clip, (part, agreement) in zip(group, shared):
                    clip.text, clip.text_source, clip.agreement = part, origin, agreement
        for clip in made:
            if clip.dropped is None and not clip.text.strip():
                clip.dropped = "no_speech"  # the ASR heard no words (noise, music, breathing)
        clock.stop(stats)
        stats.input_seconds = self.steps["read"].input_seconds

    def _note_empty_recordings(self, decoded: list[tuple[Recording, str]], clips: list[Clip]) -> None:
        """One problem line for each recording that gave clips but kept none (noise, music, too quiet…)."""
        noted = {problem.source for problem in self.problems}
        for recording, _ in decoded:
            own = [clip for clip in clips if clip.recording.name == recording.name]
            if recording.name in noted or not own or any(clip.dropped is None for clip in own):
                continue
            reasons = _counts(clip.dropped for clip in own)
            reason = "no_speech" if set(reasons) == {"no_speech"} else "no_clips"
            detail = "the ASR heard no words in it" if reason == "no_speech" else "every clip was dropped"
            self.problems.append(Problem(recording.name, reason, f"{detail} ({', '.join(f'{k}: {v}' for k, v in reasons.items())})"))

    # ------------------------------------------------------------------ 6. review and preparation
    def _csv_settings(self) -> DataConfig:
        return _csv_settings(self.data, self.work)

    def _held_out(self, prepared: PreparedData) -> set[str]:
        from f5app.data.dataset import record_split  # deferred: pulls torch at import (1.9 s, NOTES.md)

        try:
            clips, _, val = record_split(prepared, self.data.val_fraction, self.data.val_min_items, self.data.seed)
        except ValueError as error:
            raise DataError(str(error)) from None
        return {clips[i].audio_path for i in val}

    def _forget_stale_clips(self, clips: list[Clip], merged: review.Merged) -> None:
        """Delete clip files an earlier run made that this one does not (other settings), unless a line names them."""
        record_path = self.cache_dir / "made.json"
        earlier = set((read_json_object(record_path, max_bytes=256 * 1024 * 1024) or {}).get("files", []))
        now = {clip.audio_file for clip in clips if clip.audio_file}
        named = {name for name, _ in merged.rows}
        for name in sorted(earlier - now - named):
            (self.work / name).unlink(missing_ok=True)
        write_json_atomic(record_path, {"files": sorted(now)}, durable=False)

    def _write_review(self, decoded, clips: list[Clip], merged: review.Merged, prepared: PreparedData | None,  # noqa: ANN001
                      val: set[str], total_seconds: float, total_cpu_seconds: float) -> Path:
        texts = dict(merged.rows)
        coverage = report.vocabulary_coverage(list(texts.values()), self.data, self.work)
        missing = set(coverage["missing"])
        skipped = _skipped_rows(prepared, self.work)
        kept_rows, dropped_rows = [], []
        last_of_file = {clip.recording.name: clip for clip in sorted(clips, key=lambda clip: clip.span.start)}
        for clip in clips:
            row = self._clip_row(clip)
            if last_of_file[clip.recording.name] is clip:
                row["trailing_silence"] = self._trailing_silence(clip)
            if clip.dropped is None and clip.audio_file in merged.removed:
                row["dropped"] = "removed_by_you"
            if row["dropped"] is None:
                row["text"] = texts.get(clip.audio_file, row["text"])
                row["edited"] = clip.audio_file in merged.edited
                row["skipped"] = skipped.get(str((self.work / clip.audio_file).resolve()))
                row["split"] = "val" if str((self.work / clip.audio_file).resolve()) in val else "train" if prepared else None
                row["flags"] = report.flags_for(row, self.data, missing)
                kept_rows.append(row)
            else:
                dropped_rows.append(row)
        input_seconds = self._input_seconds(decoded)
        steps = {name: stats.to_dict() for name, stats in self.steps.items()}
        steps["all"] = StepStats(len(decoded), 0, total_seconds, total_cpu_seconds, input_seconds, input_seconds).to_dict()
        summary = {
            "recordings": len(decoded),
            "input_seconds": input_seconds,
            "clips": len(kept_rows),
            "clip_seconds": sum(row["seconds"] for row in kept_rows),
            "train": sum(1 for row in kept_rows if row["split"] == "train"),
            "val": sum(1 for row in kept_rows if row["split"] == "val"),
            "dropped": len(dropped_rows),
            "dropped_by_reason": _counts(row["dropped"] for row in dropped_rows),
            "flagged": sum(1 for row in kept_rows if row["flags"]),
            "added_by_you": sorted(merged.added),
        }
        content = {
            "source": str(self.root),
            "work_dir": str(self.work),
            "metadata": str(self.work / review.METADATA_FILE),
            "prepared_dir": str(prepared.dir) if prepared else None,
            "asr": self._asr_description(),
            "summary": summary,
            "problems": [asdict(problem) for problem in self.problems],
            "clips": kept_rows,
            "dropped": dropped_rows,
            "orphaned_edits": merged.orphaned,
            "vocabulary": coverage,
            "steps": steps,
            "settings": {key: value for key, value in asdict(self.data).items() if key != "asr"} | {"asr": self.asr_id},
        }
        content["speakers"] = self._speaker_rows(clips, kept_rows)
        path = report.write_review(self.work, content)
        for problem in self.problems:
            log.warning("%s: %s: %s", problem.source, problem.reason, problem.detail)
        return path

    def _speaker_rows(self, clips: list[Clip], kept_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each speaker found: speech time, clips, whether data.speaker keeps them, and a short sample."""
        places = speakers.clearest([h.windows for _, _, h in self.heard], self.window_labels, self.voices)
        rows = []
        for index, (speaker, place) in enumerate(zip(self.voices.ids, places)):
            sample, sample_from = self._write_sample(speaker, place) if place is not None else (None, None)
            rows.append({
                "speaker": speaker,
                "seconds": round(float(self.voices.seconds[index]), 2) if self.voices.seconds is not None else None,
                "clips": sum(1 for clip in clips if clip.speaker == speaker),
                "kept_clips": sum(1 for row in kept_rows if row["speaker"] == speaker),
                "kept": speaker in self.kept_speakers,
                "sample": sample,
                "sample_from": sample_from,
            })
        return rows

    def _write_sample(self, speaker: str, place: tuple[int, float, float]) -> tuple[str, dict[str, Any]]:
        """``speakers/<id>.wav``: up to SAMPLE_SECONDS around the speaker's clearest window, inside
        its stretch of speech (so no other voice is in it)."""
        recording, start, end = place
        source, read_key, heard = self.heard[recording]
        info = self.read_info[read_key]
        region = next((r for r in heard.regions if r.start <= start + 1e-6 and end <= r.end + 1e-6), segment.Region(start, end))
        middle = (start + end) / 2
        begin = max(region.start, min(middle - report.SAMPLE_SECONDS / 2, region.end - report.SAMPLE_SECONDS))
        stop = min(region.end, begin + report.SAMPLE_SECONDS)
        rate = info["sample_rate"]
        audio, _ = soundfile.read(str(StepCache(self.cache_dir, "read").file(read_key, ".wav")), dtype="float32",
                                  start=int(begin * rate), frames=max(1, int((stop - begin) * rate)))
        name = f"{report.SAMPLES_DIR}/{speaker}.wav"
        (self.work / report.SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write(self.work / name, lambda tmp: soundfile.write(str(tmp), audio, rate, format="WAV"), durable=False)
        return name, {"source": source, "start": round(begin, 2), "end": round(begin + len(audio) / rate, 2)}

    def _clip_row(self, clip: Clip) -> dict[str, Any]:
        measured = clip.measured or {}
        return {
            "audio_file": clip.audio_file,
            "source": clip.recording.name,
            "start": measured.get("start", clip.span.start),
            "end": measured.get("end", clip.span.end),
            "seconds": measured.get("seconds", clip.span.seconds),
            "cut": clip.span.cut,
            "text": clip.text,
            "text_source": clip.text_source,
            "asr_text": (clip.asr or {}).get("text"),
            "confidence": (clip.asr or {}).get("confidence"),
            "language": (clip.asr or {}).get("language"),
            "agreement": clip.agreement,
            "dnsmos": (clip.dnsmos or {}).get("ovrl"),
            "duplicates": clip.duplicates or [],
            "speaker": clip.speaker,
            "trailing_silence": None,  # set for each file's last clip
            "loudness_lufs": measured.get("loudness_lufs"),
            "gain_db": measured.get("gain_db"),
            "clipped_fraction": measured.get("clipped_fraction"),
            "dropped": clip.dropped,
            "flags": [],
            "split": None,
        }

    def _trailing_silence(self, clip: Clip) -> float | None:
        """Seconds of the recording after this clip's speech."""
        info = self.read_info[clip.read_key]
        return round(max(0.0, info["frames"] / info["sample_rate"] - clip.span.speech_end), 3)

    def _asr_description(self) -> str:
        if self.asr.loaded:
            described = self.asr.get().describe()
            return f"{described['name']} ({described['model']}, {described['library']}, beam {described['beam_size']})"
        return f"{self.asr_cfg.name} ({self.asr_cfg.model}; every transcript from the cache or your files)"

    # ------------------------------------------------------------------ helpers
    def _input_seconds(self, decoded: list[tuple[Recording, str]]) -> float:
        return sum(self.read_info[key]["seconds"] for _, key in decoded)

    @staticmethod
    def _label(step: str) -> str:
        """``3/5 normalise``: the step's place among the steps that show a bar (all but the review)."""
        return f"{STEPS.index(step) + 1}/{len(STEPS) - 1} {step}"

    def _bar(self, label: str, total: float, unit: str):  # noqa: ANN202
        fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]" if unit == "s" else None
        return tqdm(total=total, desc=label, unit=unit, disable=not self.show, bar_format=fmt, leave=True)


def _csv_settings(data: RecordingsDataConfig, work: Path) -> DataConfig:
    """The same data settings for the clips folder, as ``data=csv_wavs`` would take them."""
    values = {f.name: getattr(data, f.name) for f in fields(DataConfig)}
    return DataConfig(**{**values, "name": "csv_wavs", "path": str(work)})


def _scaled(update: Callable[[float], Any], info: dict[str, Any]) -> Callable[[float], None]:
    """Progress in the recording's seconds from seconds of its decoded copy (the two differ by resampling rounding)."""
    factor = info["seconds"] / max(1e-9, info["frames"] / info["sample_rate"])
    return lambda seconds: update(seconds * factor)


def _file_matches(path: Path, record: dict[str, Any]) -> bool:
    try:
        return path.stat().st_size == record["size"]
    except OSError:
        return False


def _skipped_rows(prepared: PreparedData | None, work: Path) -> dict[str, str]:
    if prepared is None:
        return {}
    data = read_json_object(prepared.dir / "report.json", max_bytes=256 * 1024 * 1024) or {}
    return {row.get("audio_path") or "": row.get("reason", "") for row in data.get("skipped_rows", [])}


def _slug(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("._") or "recording"


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _stamp(seconds: float) -> str:
    """``00h01m05.20s``: where the clip starts in its recording, sortable."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}h{int(minutes):02d}m{secs:05.2f}s"


def _counts(values: Iterator[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return dict(sorted(out.items()))


def _count_reasons(problems: list[Problem]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in _counts(p.reason for p in problems).items()) or "none"
