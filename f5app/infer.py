"""``python -m f5app.infer text="..."``: speak with any resolved checkpoint (Hydra entry, thin).

    python -m f5app.infer run_name=demo text="Hello there."
    python -m f5app.infer ckpt=custom ckpt.path=model_1250000.safetensors model=f5tts_v1_base \
        vocoder=vocos text_file=story.txt out=story.wav

Bad input prints ``error: <what to fix>`` and exits 2. The last line on stdout is the wav's path.
torch and f5_tts are imported only once a model is needed, so ``--help`` answers at once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, EvalConfig, InferConfig, to_settings
from f5app.errors import exit_on_user_error
from f5app.evaluation.settings import effective_settings, overridden_groups
from f5app.files import atomic_write, write_json_atomic
from f5app.inference.errors import InferenceInputError
from f5app.inference.text import MAIN_VOICE
from f5app.inference.upstream_import import defer_unused_imports

log = logging.getLogger("f5app.infer")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def run(cfg: DictConfig | InferConfig, started: float | None = None, overrides: list[str] | None = None) -> Path:
    """Synthesise as the command line does and return the written audio path (the programmatic twin of the CLI).

    ``overrides`` (the command line's) tell which asr/speaker settings the user chose for
    ``best_of``; the others come from the checkpoint's recorded config.
    """
    from f5app.audio.io import write_audio  # deferred: f5app.audio.io costs 0.24 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.inference.synthesizer import Synthesizer, require_files  # deferred: f5app.inference.synthesizer costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast

    started = time.perf_counter() if started is None else started
    settings: InferConfig = cfg if isinstance(cfg, InferConfig) else to_settings(cfg, InferConfig)
    text = read_text(settings)
    log.info("text: %s", text_preview(text))
    require_files([("ref_audio", settings.ref_audio)])
    if settings.best_of < 1:
        raise InferenceInputError(f"best_of={settings.best_of} must be at least 1")
    out_path = choose_output_path(settings)
    scores_path = sidecar_path(out_path) if settings.verify.name != "off" or settings.best_of > 1 else None
    if scores_path is not None and scores_path.exists() and not settings.overwrite:
        raise InferenceInputError(f"{scores_path} (the scores) already exists; choose another out= or pass overwrite=true")
    synthesizer = Synthesizer.from_config(settings, run_dir=Path(settings.run_dir))
    log.info("loaded %s on %s (%s)", synthesizer.source, synthesizer.device, str(synthesizer.dtype).replace("torch.", ""))
    synthesis_started = time.perf_counter()
    candidates = None
    if settings.best_of > 1:
        result, candidates = best_of(synthesizer, settings, text, overrides or [])
    else:
        result = synthesizer.generate(text, settings.ref_audio, settings.ref_text)
    synthesis_seconds = time.perf_counter() - synthesis_started
    log.info("text as spoken (text_norm %s): %s", synthesizer.normaliser.name, text_preview(result.normalized_text))
    write_audio(out_path, result.wav, result.sample_rate, overwrite=settings.overwrite)
    if settings.save_chunks:
        folder = save_chunks(result, chunks_folder(out_path), overwrite=settings.overwrite)
        log.info("wrote %d chunk(s) to %s", len(result.chunk_waves), folder)
    if scores_path is not None:
        write_json_atomic(scores_path, scores_record(synthesizer, result, candidates))
        log.info("scores of every try: %s", scores_path)
    if settings.save_spectrogram:
        save_spectrogram(result.mel, out_path.with_suffix(".png"), overwrite=settings.overwrite)
    log.info(
        "%d chunk(s), seed %d; audio %.2f s, wall %.2f s (%.2f s since start), real-time factor %.3f; wrote %s",
        len(result.chunks), result.seed, result.seconds, synthesis_seconds, time.perf_counter() - started,
        synthesis_seconds / max(result.seconds, 1e-9), out_path,
    )
    print(out_path, flush=True)
    return out_path


#: ``text_file=-``: read the text from standard input.
STDIN = "-"


def sidecar_path(out_path: Path) -> Path:
    """``out.wav`` -> ``out.wav.json``: the scores written beside the audio."""
    return out_path.with_name(out_path.name + ".json")


def scores_record(synthesizer, result, candidates) -> dict:  # noqa: ANN001
    """What the sidecar holds: each chunk's tries (verify=asr), best_of's candidates, the references used."""
    return {
        "seed": result.seed,
        "seconds": round(result.seconds, 3),
        "chunks": [{"voice": voice, "text": text} for voice, text in result.chunks],
        "verify": [draws.to_dict() for draws in result.verification] if result.verification else None,
        "best_of": candidates.to_dict() if candidates is not None else None,
        "references": synthesizer.prepared_references(),
    }


def best_of(synthesizer, settings: InferConfig, text: str, overrides: list[str]):  # noqa: ANN001, ANN201
    """``best_of`` candidates scored by WER against ``text`` and SIM against the reference voice; the best is kept.

    Returns ``(Synthesis, Draws)``: the kept synthesis and every candidate (f5app/inference/verify.py)."""
    from f5app.evaluation.evaluator import build_evaluator  # deferred: f5app.evaluation.evaluator costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.inference.verify import Draws, tries_of  # deferred: f5app.inference.verify imports the evaluator (above)

    recorded = synthesizer.metadata.config if synthesizer.metadata is not None else None
    chosen = effective_settings(settings.asr, settings.speaker, EvalConfig(), recorded, overridden_groups(overrides))
    evaluator = build_evaluator(chosen.asr, chosen.speaker, device=synthesizer.device, normaliser=synthesizer.normaliser)
    if settings.ref_audio is not None:
        reference = settings.ref_audio
    elif MAIN_VOICE in synthesizer.voices:
        reference = synthesizer.voices[MAIN_VOICE].ref_audio
    elif synthesizer.default_voice is not None:
        reference = str(synthesizer.default_voice.audio)
    else:
        raise InferenceInputError("best_of needs a reference voice to compare with: pass ref_audio=FILE ref_text=\"...\"")
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31 - settings.best_of)
    result, candidates = evaluator.best_of(
        synthesizer, text, ref_audio=settings.ref_audio, ref_text=settings.ref_text, sim_reference=reference,
        count=settings.best_of, seed=seed,
    )
    for item in candidates:
        sim = "-" if item.sim is None else f"{item.sim:.3f}"
        mark = "  <- kept" if item.seed == result.seed else ""
        log.info("best_of: seed %d wer %.3f sim %s \"%s\"%s", item.seed, item.wer, sim, item.transcript, mark)
    kept = next(index for index, item in enumerate(candidates) if item.seed == result.seed)
    draws = Draws(text, tries_of(candidates), kept, None)
    log.info("best_of=%d: kept seed %d (wer %.3f, sim %s)", settings.best_of, result.seed, draws.kept_try.wer,
             "-" if draws.kept_try.sim is None else f"{draws.kept_try.sim:.3f}")
    return result, draws


def read_text(settings: InferConfig) -> str:
    if settings.text is not None and settings.text_file is not None:
        raise InferenceInputError("pass text=... or text_file=..., not both")
    if settings.text_file == STDIN:
        text = _decode(sys.stdin.buffer.read(), "standard input (text_file=-)")
    elif settings.text_file is not None:
        path = Path(settings.text_file).expanduser()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InferenceInputError(f"text_file={path} does not exist") from None
        except OSError as exc:
            raise InferenceInputError(f"cannot read text_file={path}: {exc.strerror}") from None
        text = _decode(data, f"text_file={path}")
    elif settings.text is not None:
        text = str(settings.text)
    else:
        raise InferenceInputError('nothing to say: pass text="..." or text_file=FILE (text_file=- reads standard input)')
    if not text.strip():
        raise InferenceInputError("text is empty; pass text=\"something to say\" or a non-empty text_file")
    return text


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text-mode reads do
    except UnicodeDecodeError as exc:
        raise InferenceInputError(f"{source} is not UTF-8 (bad byte at offset {exc.start}); save it as UTF-8") from None


def text_preview(text: str, limit: int = 200) -> str:
    """The text as logged: Python's quoting, cut at ``limit`` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def choose_output_path(settings: InferConfig) -> Path:
    """``out`` as given (refused if it exists without ``overwrite``), else a new name in ``out_dir``.

    Checked before the model loads, so a bad path costs nothing and never loses an existing file.
    """
    if settings.out is not None and settings.out_dir is not None:
        raise InferenceInputError("pass out=FILE or out_dir=DIR, not both")
    if settings.out is not None:
        path = Path(settings.out).expanduser()
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise InferenceInputError(f"out={path}: the name must end in .wav, .flac or .ogg")
        if path.is_dir():
            raise InferenceInputError(f"out={path} is a directory; use out_dir={path} or give a file name")
        if path.exists() and not settings.overwrite:
            raise InferenceInputError(f"out={path} already exists; choose another name or pass overwrite=true")
    else:
        folder = Path(settings.out_dir).expanduser() if settings.out_dir else Path(settings.run_dir) / "samples"
        path = unused_name(folder, f"sample-{datetime.now().strftime('%Y%m%d-%H%M%S')}", ".wav")
    if settings.save_chunks and chunks_folder(path).exists() and not settings.overwrite:
        raise InferenceInputError(f"{chunks_folder(path)} (save_chunks) already exists; choose another out= or pass overwrite=true")
    picture = path.with_suffix(".png")
    if settings.save_spectrogram and picture.exists() and not settings.overwrite:
        raise InferenceInputError(f"{picture} (the spectrogram) already exists; choose another out= or pass overwrite=true")
    ensure_writable_folder(path.parent)
    return path


def chunks_folder(out_path: Path) -> Path:
    """``save_chunks``: ``story.wav`` -> ``story_chunks/`` beside it (upstream: ``<output stem>_chunks``)."""
    return out_path.with_name(f"{out_path.stem}_chunks")


def save_chunks(result, folder: Path, overwrite: bool = False) -> Path:  # noqa: ANN001 (a Synthesis)
    """Each chunk's audio as ``NNN.wav`` in ``folder``, with ``chunks.json`` (voice, text, seconds, seed)."""
    from f5app.audio.io import write_audio  # deferred: f5app.audio.io imports numpy and soundfile; --help must stay fast

    folder.mkdir(parents=True, exist_ok=True)
    listing = []
    for index, (wave, (voice, text)) in enumerate(zip(result.chunk_waves, result.chunks)):
        name = f"{index:03d}.wav"
        write_audio(folder / name, wave, result.sample_rate, overwrite=overwrite)
        listing.append({"file": name, "voice": voice, "text": text, "seconds": round(len(wave) / result.sample_rate, 3),
                        "seed": result.seed + index})
    atomic_write(folder / "chunks.json", json.dumps(listing, indent=2, ensure_ascii=False) + "\n", durable=False)
    return folder


def unused_name(folder: Path, stem: str, suffix: str) -> Path:
    candidate, index = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        candidate, index = folder / f"{stem}-{index}{suffix}", index + 1
    return candidate


def ensure_writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InferenceInputError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise InferenceInputError(f"output folder {folder} is not writable; choose another out= or out_dir=")


def save_spectrogram(mel, path: Path, overwrite: bool = False) -> Path:
    """A PNG of the generated mel next to the wav, written to a temporary name and renamed."""
    import matplotlib  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    if path.exists() and not overwrite:
        raise InferenceInputError(f"{path} already exists; pass overwrite=true")
    figure = plt.figure(figsize=(12, 4))
    try:
        plt.imshow(mel, origin="lower", aspect="auto")
        plt.colorbar()
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), durable=False)
    finally:
        plt.close(figure)
    return path


@hydra.main(config_path=str(CONF_DIR), config_name="infer", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        run(cfg, started=_PROCESS_START, overrides=list(HydraConfig.get().overrides.task))


_PROCESS_START = time.perf_counter()


USAGE = 'usage: python -m f5app.infer text="..." [run_name=NAME] [ckpt=auto|best|last|latest|custom|pretrained] [key=value ...]'
#: Taken literally from the command line, whatever the sentence holds (f5app/free_text.py).
FREE_TEXT_KEYS = ("text", "ref_text", "voices.*.ref_text")


def main() -> None:
    # Idle OpenMP threads otherwise spin on their cores; on a busy CPU that made sampling ~10x
    # slower (docs/benchmarks.md). Must be set before torch is imported; the user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    defer_unused_imports()  # a fresh process: skip ~3 s of imports sampling never uses
    run_hydra_app(_hydra_main, "infer", USAGE, free_text_keys=FREE_TEXT_KEYS)


if __name__ == "__main__":
    sys.exit(main())
