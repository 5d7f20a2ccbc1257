#!/usr/bin/env python
"""What checking costs (scripts/bench.py's ``verify_asr`` section; runs alone too).

    .venv/bin/python scripts/bench_verify_asr.py [--nfe 32] [--repeats 1] [--json FILE]

1. ``verify=asr``: seconds of checking (tiny.en transcription + resemblyzer embedding, through
   the same ``Evaluator.score`` the verifier calls) per second of audio, against seconds of
   synthesis per second of audio, at ``f5tts_v1_small`` size with random weights (its cost is that
   of real weights) and at the demo's size (``model=tiny``). Checking is measured on the
   synthesised chunk and on human speech (f5-tts's recordings): random weights buzz, and Whisper
   decodes buzz and speech at different speeds. Goal: checking adds at most 10 % to synthesis
   time at f5tts_v1_small size (one try per chunk, i.e. before any redraw).
2. Reference preparation, each step timed alone with its model already loaded: transcription
   with word timestamps, alignment and cut, DNSMOS, speaker spread; for a 5.3 s reference and
   for a 40 s one that is cut (f5-tts's Rainbow Passage recording four times over).

Both sides of each ratio run in this one process, alternating, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

RATE = 24000
BASIC_TEXT = "Some call me nature, others call me mother nature."
TOWN_TEXT = ("The difference in the rainbow depends considerably upon the size of the drops, "
             "and the width of the colored band increases as the size of the drops increases.")
SENTENCE = "The birch canoe slid on the smooth planks, and the sheet was glued to the dark blue background."


def example(name: str) -> Path:
    import f5_tts

    return Path(f5_tts.__path__[0]) / "infer/examples" / name


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def synthesizer(model_name: str, nfe: int):  # noqa: ANN201
    """A Synthesizer of ``model_name``'s size with random weights and upstream's vocabulary."""
    import torch

    from f5app.audio.vocoder import load_vocoder
    from f5app.config import ModelConfig, VocoderConfig, to_settings
    from f5app.data.vocab import read_vocab, upstream_vocab_path
    from f5app.hydra_setup import register
    from f5app.inference.synthesizer import SamplingSettings, Synthesizer
    from f5app.inference.upstream_import import register_lazy_f5_model_package
    from f5app.model import build_cfm
    from omegaconf import OmegaConf

    register()
    raw = OmegaConf.load(ROOT / "conf" / "model" / f"{model_name}.yaml")
    raw.pop("defaults", None)  # the group's schema line; the keys below are the model
    model = to_settings(raw, ModelConfig)
    register_lazy_f5_model_package()
    vocab = read_vocab(upstream_vocab_path())
    torch.manual_seed(0)
    cfm = build_cfm(model, vocab).eval()
    vocoder = load_vocoder(VocoderConfig(name="griffinlim"), model.mel, device="cpu")
    return Synthesizer(cfm=cfm, vocoder=vocoder, vocab=vocab, model_config=model, device="cpu", dtype=torch.float32,
                       settings=SamplingSettings(nfe_step=nfe, progress=False), source=f"{model_name} random weights")


def checking_cost(models: list[str], nfe: int, repeats: int) -> dict[str, Any]:
    from f5app.audio.io import read_audio
    from f5app.config import SpeakerConfig, bundled_asr
    from f5app.evaluation.evaluator import Evaluator, as_written
    from f5app.speech.asr import build_transcriber
    from f5app.speech.speaker import build_embedder

    load_s, evaluator = timed(lambda: Evaluator(build_transcriber(bundled_asr()), build_embedder(SpeakerConfig(name="resemblyzer")), "en"))
    reference = example("basic/basic_ref_en.wav")
    human = [read_audio(example(n), target_sr=RATE)[0] for n in ("multi/town.flac", "multi/main.flac", "basic/basic_ref_en.wav")]
    evaluator.score(human[2], RATE, BASIC_TEXT, reference)  # warm-up: first-use costs are not per chunk

    def check(wav) -> float:  # noqa: ANN001
        return timed(lambda: evaluator.score(as_written(wav, RATE), RATE, SENTENCE, reference))[0]

    human_seconds = sum(len(w) for w in human) / RATE
    rows = {}
    for name in models:
        synth = synthesizer(name, nfe)
        synth.generate("Hi.", reference, BASIC_TEXT, seed=0)  # warm-up
        synth_rates, gen_rates, human_rates = [], [], []
        for rep in range(repeats):
            seconds, result = timed(lambda: synth.generate(SENTENCE, reference, BASIC_TEXT, seed=rep))
            synth_rates.append(seconds / result.seconds)
            gen_rates.append(check(result.wav) / result.seconds)
            human_rates.append(sum(check(w) for w in human) / human_seconds)
        synth_rate, gen_rate, human_rate = (statistics.median(v) for v in (synth_rates, gen_rates, human_rates))
        rows[name] = {
            "audio_seconds": round(result.seconds, 2), "nfe_step": nfe, "chunks": len(result.chunks),
            "synthesis_s_per_audio_s": synth_rate,
            "check_generated_s_per_audio_s": gen_rate, "check_human_s_per_audio_s": human_rate,
            "ratio_generated": gen_rate / synth_rate, "ratio_human": human_rate / synth_rate,
        }
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    return {"models": rows, "load_s": load_s}


def reference_cost(work: Path) -> dict[str, Any]:
    import numpy as np
    import soundfile as sf

    from f5app.audio.io import read_audio
    from f5app.config import ReferenceConfig, SpeakerConfig, bundled_asr
    from f5app.speech.quality import levels, speaker_spread
    from f5app.inference.reference import ReferencePreparer, cut_at_word, trim_silence_edges

    preparer = ReferencePreparer(ReferenceConfig(check=True), bundled_asr(), SpeakerConfig(name="resemblyzer"))
    load = {"asr": timed(preparer.transcriber)[0], "dnsmos": timed(preparer.dnsmos)[0], "speaker": timed(preparer.embedder)[0]}
    town = read_audio(example("multi/town.flac"), target_sr=RATE)[0]
    gap = np.zeros(int(0.6 * RATE), dtype=np.float32)
    long_path = work / "rainbow_x4.flac"
    sf.write(long_path, np.concatenate([town, gap, town, gap, town, gap, town]), RATE)
    preparer.judge(read_audio(example("basic/basic_ref_en.wav"), target_sr=RATE)[0], RATE)  # warm-up (librosa, first runs)
    rows = {}
    for label, path, text in (("5.3 s reference", example("basic/basic_ref_en.wav"), BASIC_TEXT),
                              ("40 s reference, cut", long_path, " ".join([TOWN_TEXT] * 4))):
        wav = trim_silence_edges(read_audio(path, target_sr=RATE)[0], RATE)
        asr_s, transcript = timed(lambda: preparer.transcriber().transcribe(wav, RATE, language="en", word_timestamps=True))
        row: dict[str, Any] = {"seconds": round(len(wav) / RATE, 2), "transcription_s": asr_s}
        if len(wav) > 12 * RATE:
            row["alignment_cut_s"], (wav, _, _) = timed(lambda: cut_at_word(wav, RATE, text, list(transcript.words), 12.0, 0.3, "en"))
        row["levels_s"] = timed(lambda: levels(wav))[0]
        row["dnsmos_s"] = timed(lambda: preparer.dnsmos().score(wav, RATE))[0]
        row["speaker_spread_s"] = timed(lambda: speaker_spread(preparer.embedder(), wav, RATE, 3.0))[0]
        row["whole_prepare_s"] = timed(lambda: preparer.prepare(path, text, RATE, 12.0))[0]
        rows[label] = row
        print(f"{label}: {row}", file=sys.stderr, flush=True)
    return {"load_s": load, "references": rows}


def bench_verify_asr(nfe: int, repeats: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    return {"checking": checking_cost(["f5tts_v1_small", "tiny"], nfe, repeats), "reference": reference_cost(work)}


def table_rows(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for scripts/bench.py's table (its Row fields)."""
    if not result:
        return []
    rows = []
    for name, row in result["checking"]["models"].items():
        goal = name == "f5tts_v1_small"
        rows.append({
            "measure": f"verify=asr: checking (tiny.en + resemblyzer) per audio second vs synthesis, {name} (nfe {row['nfe_step']}), on the generated chunk",
            "ours": f"{row['check_generated_s_per_audio_s']:.3f} s/s", "baseline": f"{row['synthesis_s_per_audio_s']:.3f} s/s",
            "ratio": row["ratio_generated"], "goal": "<= 0.10x" if goal else "info", "met": row["ratio_generated"] <= 0.10 if goal else None,
        })
        rows.append({
            "measure": f"  same, checking human speech per audio second ({name})",
            "ours": f"{row['check_human_s_per_audio_s']:.3f} s/s", "baseline": f"{row['synthesis_s_per_audio_s']:.3f} s/s",
            "ratio": row["ratio_human"], "goal": "<= 0.10x" if goal else "info", "met": row["ratio_human"] <= 0.10 if goal else None,
        })
    for label, row in result["reference"]["references"].items():
        steps = f"ASR {row['transcription_s']:.2f}" + (f" + cut {row['alignment_cut_s']:.3f}" if "alignment_cut_s" in row else "")
        steps += f" + DNSMOS {row['dnsmos_s']:.2f} + speakers {row['speaker_spread_s']:.2f} s"
        rows.append({"measure": f"reference preparation, {label}", "ours": f"{row['whole_prepare_s']:.2f} s", "baseline": steps,
                     "ratio": None, "goal": "info", "met": None})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/f5app-bench-verify-asr"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result = bench_verify_asr(args.nfe, args.repeats, args.workdir)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
