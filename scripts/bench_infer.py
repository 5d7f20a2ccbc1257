#!/usr/bin/env python
"""Inference benchmark: f5app against upstream F5-TTS, same checkpoint, reference, text, NFE and device.

    .venv/bin/python scripts/bench_infer.py [--nfe 32] [--repeats 3] [--device cpu] [--json out.json]

Measures, in one run:

1. Real-time factor (synthesis seconds / audio seconds, lower is better), models already loaded:
   ``Synthesizer.synthesize`` against upstream ``utils_infer.infer_process``. Runs alternate so
   background load hits both alike; the median is reported.
2. Process start to wav written: ``python -m f5app.infer`` against upstream ``f5-tts_infer-cli``.

Everything is offline: a tiny CFM (conf/model/tiny.yaml) saved as an f5app checkpoint whose
``model.pt`` upstream reads as-is, and a randomly initialised Vocos with charactr/vocos-mel-24khz's
real config saved in the Hub's folder layout (both tools load it as a local vocoder).

Upstream's ``infer_process`` reads the reference with ``torchaudio.load``, which needs FFmpeg
(absent here), so the upstream side runs with ``torchaudio.load`` replaced by a soundfile reader;
f5app needs no such help. Targets (issue 5): RTF ratio <= 1, start-to-wav ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF_TEXT = "Some call me nature, others call me mother nature."
GEN_TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
VOCOS_CONFIG = """\
feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args: {sample_rate: 24000, n_fft: 1024, hop_length: 256, n_mels: 100, padding: center}
backbone:
  class_path: vocos.models.VocosBackbone
  init_args: {input_channels: 100, dim: 512, intermediate_dim: 1536, num_layers: 8}
head:
  class_path: vocos.heads.ISTFTHead
  init_args: {dim: 512, n_fft: 1024, hop_length: 256, padding: center}
"""
# Upstream's infer_process needs torchaudio.load, which needs FFmpeg; read WAVs with soundfile instead.
TORCHAUDIO_SHIM = """
import soundfile, torch, torchaudio
def _load(path, *args, **kwargs):
    data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), sr
torchaudio.load = _load
"""


def upstream_reference() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("f5_tts")
    return Path(next(iter(spec.submodule_search_locations))) / "infer/examples/basic/basic_ref_en.wav"


def make_assets(work: Path) -> dict[str, Path]:
    """Tiny f5app checkpoint, upstream model-config YAML, random Vocos folder (Hub layout)."""
    import torch
    from ema_pytorch import EMA
    from vocos import Vocos

    from f5app.ckpt import schema
    from f5app.ckpt.store import CheckpointStore
    from f5app.config import ArchConfig, ModelConfig
    from f5app.inference.upstream_import import register_lazy_f5_model_package
    from f5app.model import build_cfm

    register_lazy_f5_model_package()
    model = ModelConfig(name="tiny", arch=ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1))
    vocab = [" "] + sorted(set(REF_TEXT + GEN_TEXT) - {" "})
    torch.manual_seed(0)
    cfm = build_cfm(model, vocab)
    ema = EMA(cfm, include_online_model=False)
    metadata = schema.new_metadata(
        run_name="bench", update=1, epoch=0, samples_seen=0, metrics=schema.Metrics(), world_size=1, precision="no",
        model=asdict(model), vocab_size=len(vocab), config={"model": asdict(model)}, hydra=schema.HydraRecord(), lineage=schema.Lineage(),
    )
    weights = {schema.MODEL_STATE: cfm.state_dict(), schema.EMA_STATE: ema.state_dict(), schema.OPTIMIZER_STATE: {}, schema.UPDATE_KEY: 1}
    record = schema.Checkpoint(metadata, weights, schema.TrainingState(schema.Progress(update=1), world_size=1), [], vocab)
    ckpt = CheckpointStore(work / "runs" / "bench" / "checkpoints", keep_last=0).save(record)

    upstream_cfg = work / "tiny_upstream.yaml"
    arch = asdict(model.arch)
    upstream_cfg.write_text(json.dumps({"model": {"backbone": "DiT", "arch": arch, "mel_spec": {"mel_spec_type": "vocos"}}}))

    # upstream --load_vocoder_from_local reads ../checkpoints/vocos-mel-24khz relative to its cwd
    vocos_dir = work / "checkpoints" / "vocos-mel-24khz"
    vocos_dir.mkdir(parents=True)
    (vocos_dir / "config.yaml").write_text(VOCOS_CONFIG)
    torch.save(Vocos.from_hparams(str(vocos_dir / "config.yaml")).state_dict(), vocos_dir / "pytorch_model.bin")
    (work / "cwd").mkdir()
    return {"ckpt": ckpt, "upstream_cfg": upstream_cfg, "vocos": vocos_dir, "cwd": work / "cwd"}


def rtf_pair(assets: dict[str, Path], nfe: int, repeats: int, device: str) -> dict:
    import torch

    from f5app.config import CkptConfig, InferConfig, VocoderConfig
    from f5app.inference.synthesizer import Synthesizer

    ref = upstream_reference()
    cfg = InferConfig(
        run_dir=str(assets["ckpt"].parent.parent), ckpt=CkptConfig(name="custom", infer_chain=["custom"], path=str(assets["ckpt"])),
        vocoder=VocoderConfig(name="vocos", local_path=str(assets["vocos"])), nfe_step=nfe, device=device,
        dtype="fp32", progress=False,
    )
    ours = Synthesizer.from_config(cfg, assets["ckpt"].parent.parent)

    exec(TORCHAUDIO_SHIM, {})
    from f5_tts.infer import utils_infer
    from f5_tts.model import DiT

    model_cfg = json.loads(assets["upstream_cfg"].read_text())["model"]
    theirs = utils_infer.load_model(
        DiT, model_cfg["arch"], str(assets["ckpt"] / "model.pt"), vocab_file=str(assets["ckpt"] / "vocab.txt"), device=device
    )
    vocoder = utils_infer.load_vocoder("vocos", is_local=True, local_path=str(assets["vocos"]), device=device)
    upstream_ref, upstream_ref_text = utils_infer.preprocess_ref_audio_text(str(ref), REF_TEXT, show_info=lambda *_: None)

    def run_ours() -> tuple[float, float]:
        start = time.perf_counter()
        wav, sr = ours.synthesize(GEN_TEXT, ref, REF_TEXT, seed=0)
        return time.perf_counter() - start, len(wav) / sr

    def run_theirs() -> tuple[float, float]:
        torch.manual_seed(0)
        start = time.perf_counter()
        wav, sr, _ = utils_infer.infer_process(
            upstream_ref, upstream_ref_text, GEN_TEXT, theirs, vocoder, nfe_step=nfe, device=device,
            show_info=lambda *_: None, progress=None,
        )
        return time.perf_counter() - start, len(wav) / sr

    run_ours(), run_theirs()  # warm-up: first calls allocate and build caches
    ours_rtf, theirs_rtf, seconds = [], [], {}
    for _ in range(repeats):
        for name, fn, sink in (("f5app", run_ours, ours_rtf), ("upstream", run_theirs, theirs_rtf)):
            wall, audio = fn()
            sink.append(wall / audio)
            seconds[name] = audio
    return {
        "f5app_rtf": statistics.median(ours_rtf),
        "upstream_rtf": statistics.median(theirs_rtf),
        "ratio": statistics.median(ours_rtf) / statistics.median(theirs_rtf),
        "min_ratio": min(ours_rtf) / min(theirs_rtf),
        "runs": {"f5app": ours_rtf, "upstream": theirs_rtf},
        "audio_seconds": seconds,
    }


def start_to_wav_pair(assets: dict[str, Path], nfe: int, repeats: int, device: str) -> dict:
    ref = upstream_reference()
    out_dir = assets["cwd"] / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

    def ours(i: int) -> list[str]:
        return [
            sys.executable, "-m", "f5app.infer", "ckpt=custom", f"ckpt.path={assets['ckpt']}", "vocoder=vocos",
            f"vocoder.local_path={assets['vocos']}", f"ref_audio={ref}", f"ref_text='{REF_TEXT}'", f"text='{GEN_TEXT}'",
            f"nfe_step={nfe}", f"device={device}", f"out={out_dir / f'f5app_{i}.wav'}", "seed=0",
            f"output_root={assets['cwd'] / 'outputs'}",
        ]

    def theirs(i: int) -> list[str]:
        argv = [
            "f5-tts_infer-cli", "--model_cfg", str(assets["upstream_cfg"]), "--ckpt_file", str(assets["ckpt"] / "model.pt"),
            "--vocab_file", str(assets["ckpt"] / "vocab.txt"), "--ref_audio", str(ref), "--ref_text", REF_TEXT,
            "--gen_text", GEN_TEXT, "--nfe_step", str(nfe), "--load_vocoder_from_local", "--device", device,
            "--output_dir", str(out_dir), "--output_file", f"upstream_{i}.wav",
        ]
        code = TORCHAUDIO_SHIM + f"import runpy, sys; sys.argv = {argv!r}; runpy.run_module('f5_tts.infer.infer_cli', run_name='__main__')"
        return [sys.executable, "-c", code]

    to_wav: dict[str, list[float]] = {"f5app": [], "upstream": []}
    to_exit: dict[str, list[float]] = {"f5app": [], "upstream": []}
    for i in range(repeats):
        for name, command, wav in (("f5app", ours(i), out_dir / f"f5app_{i}.wav"), ("upstream", theirs(i), out_dir / f"upstream_{i}.wav")):
            start = time.time()
            done = subprocess.run(command, cwd=assets["cwd"], env=env, capture_output=True, text=True)
            ended = time.time()
            if done.returncode != 0 or not wav.is_file():
                raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            # The wav's mtime is when its last byte was written (f5app renames a finished temp file).
            to_wav[name].append(wav.stat().st_mtime - start)
            to_exit[name].append(ended - start)
    ours_s, theirs_s = statistics.median(to_wav["f5app"]), statistics.median(to_wav["upstream"])
    return {
        "f5app_seconds": ours_s, "upstream_seconds": theirs_s, "ratio": ours_s / theirs_s, "to_wav": to_wav,
        "to_exit": to_exit, "exit_ratio": statistics.median(to_exit["f5app"]) / statistics.median(to_exit["upstream"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads for both tools (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by both tools' processes
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="f5app-bench-") as tmp:
        assets = make_assets(Path(tmp))
        rtf = rtf_pair(assets, args.nfe, args.repeats, args.device)
        startup = start_to_wav_pair(assets, args.nfe, args.repeats, args.device)

    import torch

    report = {
        "device": args.device, "nfe_step": args.nfe, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "text": GEN_TEXT, "rtf": rtf, "start_to_wav": startup,
        "targets_met": {"rtf_ratio<=1": rtf["ratio"] <= 1.0, "start_to_wav_ratio<=0.5": startup["ratio"] <= 0.5},
    }
    print(f"real-time factor (median of {args.repeats}, models loaded): f5app {rtf['f5app_rtf']:.3f}  "
          f"upstream infer_process {rtf['upstream_rtf']:.3f}  ratio {rtf['ratio']:.2f} (best-of ratio "
          f"{rtf['min_ratio']:.2f}; target <= 1)")
    print(f"process start to wav written (median of {args.repeats}): f5app {startup['f5app_seconds']:.1f} s  "
          f"upstream f5-tts_infer-cli {startup['upstream_seconds']:.1f} s  ratio {startup['ratio']:.2f} (target <= 0.5; "
          f"to process exit: ratio {startup['exit_ratio']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["targets_met"]))


if __name__ == "__main__":
    main()
