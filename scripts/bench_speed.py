#!/usr/bin/env python
"""Inference speed at the sizes people run, against upstream and against this machine's matmul peak.

    python scripts/bench_speed.py --model f5tts_v1_small|f5tts_v1_base|tiny [--device cpu|cuda]
        [--nfe 7,32] [--options fp32,bf16,int8] [--compile] [--ttfa] [--long] [--json FILE]

In one process, on one random-weight model (the compute of real weights) and one short text:
- the dense-matmul peak of this device in fp32 and bf16 (fp16 on CUDA), measured now;
- upstream ``f5_tts.infer.utils_infer.infer_process`` (fp32 on CPU, fp16 on CUDA as upstream
  loads it) against f5app's Synthesizer with each ``--options`` entry (dtype or int8), at each NFE:
  real-time factor, the model's FLOPs (``torch.utils.flop_counter``) per wall second, that as a
  share of the peak in the same dtype, and the generated mel's relative difference from f5app
  fp32 at the same seed (the quality cost);
- the effect of the reference's length (the DiT runs reference + new speech together);
- ``--ttfa``: time to first audio of ``Synthesizer.stream`` (what the server streams) against the
  full response, three sentences, and upstream's own streaming path (``infer_batch_process`` with
  ``streaming=True``, its text cut as ``f5_tts/socket_server.py`` cuts a first package);
- ``--long``: a long text's chunks as padded batches against one at a time.
Sides alternate, one repetition each: the machine is shared, so read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_infer import REF_TEXT, TORCHAUDIO_SHIM, VOCOS_CONFIG, upstream_reference  # noqa: E402

from f5app.config import CONF_DIR, VocoderConfig, model_config_from_dict  # noqa: E402
from f5app.audio.vocoder import load_vocoder  # noqa: E402
from f5app.data.vocab import read_vocab, upstream_vocab_path  # noqa: E402
from f5app.inference.precision import DTYPES, prepare_network  # noqa: E402
from f5app.inference.synthesizer import SamplingSettings, Synthesizer  # noqa: E402
from f5app.inference.upstream_import import register_lazy_f5_model_package  # noqa: E402
from f5app.model import build_cfm  # noqa: E402

SHORT_TEXT = "The birch canoe slid on the smooth planks."
THREE_SENTENCES = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
                   "It is easy to tell the depth of a well.")
LONG_TEXT = " ".join(f"Paragraph {w} begins here, and it carries on for a good while so that the chunks fill up."
                     for w in ("one", "two", "three", "four", "five", "six"))


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, clock: Any = time.perf_counter) -> float:
    """FLOP/s of a dense n x n matmul in ``dtype``: the best of a few timed runs (``clock``: wall or CPU time)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(4):
        sync(device)
        start = clock()
        for _ in range(3):
            a @ b
        sync(device)
        best = min(best, (clock() - start) / 3)
    return 2 * n**3 / best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compose_model_config(name: str):
    """conf/model/NAME.yaml as a ModelConfig."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml"))
    raw.pop("defaults", None)
    return model_config_from_dict(raw)


def random_model(model_name: str, device: str):
    """The model's CFM with random weights (upstream zero-initialises the output layers: those too are drawn)."""
    register_lazy_f5_model_package()
    model_config = compose_model_config(model_name)
    vocab = read_vocab(upstream_vocab_path())
    torch.manual_seed(0)
    cfm = build_cfm(model_config, vocab)
    with torch.no_grad():
        for name, param in cfm.named_parameters():
            if param.dim() > 1 or "linear" in name or "proj_out" in name:
                param.normal_(0, 0.02)
    return cfm.to(device).eval(), model_config, vocab


def copy_model(cfm):
    """A deep copy; upstream's DiT keeps an uncopyable thread-local text cache after sampling."""
    cfm.transformer.__dict__.pop("_cache_local", None)
    return copy.deepcopy(cfm)


def random_vocos(folder: Path) -> Path:
    from vocos import Vocos

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(VOCOS_CONFIG)
    torch.manual_seed(0)
    torch.save(Vocos.from_hparams(str(folder / "config.yaml")).state_dict(), folder / "pytorch_model.bin")
    return folder


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.device = args, args.device
        self.cfm, self.model_config, self.vocab = random_model(args.model, args.device)
        self.vocos_dir = random_vocos(work / "vocos-mel-24khz")
        self.vocoder = load_vocoder(VocoderConfig(name="vocos", local_path=str(self.vocos_dir)), self.model_config.mel, device=self.device)
        self.ref = upstream_reference()
        self.synths: dict[str, Synthesizer] = {}

    def synth(self, option: str, compile: bool = False) -> Synthesizer:
        key = f"{option}{'+compile' if compile else ''}"
        if key not in self.synths:
            cfm = copy_model(self.cfm)  # self.cfm stays as built: upstream's side copies it too
            dtype = DTYPES.get(option, torch.float32)
            network = prepare_network(cfm, dtype, self.device, quantize="int8" if option == "int8" else "none", compile=compile)
            self.synths[key] = Synthesizer(cfm=cfm, vocoder=self.vocoder, vocab=self.vocab, model_config=self.model_config,
                                           device=self.device, dtype=dtype, settings=SamplingSettings(progress=False),
                                           network=network, max_batch=1)
        return self.synths[key]

    def ours(self, option: str, nfe: int, text: str = SHORT_TEXT, ref: Path | None = None, compile: bool = False) -> dict[str, Any]:
        synth = self.synth(option, compile)
        sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = synth.generate(text, ref or self.ref, REF_TEXT if ref is None else self.short_ref_text, seed=0, nfe_step=nfe)
        sync(self.device)
        wall = time.perf_counter() - start
        return {"seconds": wall, "cpu_seconds": time.process_time() - cpu_start, "audio_seconds": result.seconds,
                "rtf": wall / result.seconds, "mel": result.mel}

    def upstream(self, nfe: int, text: str = SHORT_TEXT) -> dict[str, Any]:
        from f5_tts.infer import utils_infer

        if not hasattr(self, "_upstream"):
            exec(TORCHAUDIO_SHIM, {})
            model = copy_model(self.cfm)
            if self.device.startswith("cuda"):
                model = model.half()  # as utils_infer.load_model does on GPUs
            vocoder = utils_infer.load_vocoder("vocos", is_local=True, local_path=str(self.vocos_dir), device=self.device)
            ref_audio, ref_text = utils_infer.preprocess_ref_audio_text(str(self.ref), REF_TEXT, show_info=lambda *_: None)
            self._upstream = (model, vocoder, ref_audio, ref_text)
        model, vocoder, ref_audio, ref_text = self._upstream
        torch.manual_seed(0)
        sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        wav, sr, _ = utils_infer.infer_process(ref_audio, ref_text, text, model, vocoder, nfe_step=nfe, device=self.device,
                                               show_info=lambda *_: None, progress=None)
        sync(self.device)
        wall = time.perf_counter() - start
        return {"seconds": wall, "cpu_seconds": time.process_time() - cpu_start, "audio_seconds": len(wav) / sr,
                "rtf": wall / (len(wav) / sr)}

    def flops(self, nfe: int) -> float:
        """Model FLOPs of one f5app synthesis of the short text (DiT, its attention included, and vocoder), counted in fp32."""
        from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

        # torch's counter has no formula for the CPU flash-attention kernel (it counts 0 there): without
        # this, an F5TTS_v1_Base forward at 900 frames counts 0.698 TFLOP instead of 0.844
        def attention_flops(query, key, value, *args, out_shape=None, **kwargs):
            return sdpa_flop_count(query, key, value)

        cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}
        counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
        with counter:
            self.synth("fp32").generate(SHORT_TEXT, self.ref, REF_TEXT, seed=0, nfe_step=nfe)
        return float(counter.get_total_flops())

    short_ref_text = "Some call me nature,"


def trimmed_reference(src: Path, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of the reference ("Some call me nature," ends near 2.1 s in basic_ref_en.wav)."""
    import soundfile as sf

    wav, sr = sf.read(str(src), dtype="float32")
    sf.write(str(out), wav[: int(seconds * sr)], sr)
    return out


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    frames = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :frames], b[..., :frames]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    device = args.device
    half = torch.float16 if device.startswith("cuda") else torch.bfloat16
    peaks = {"fp32": matmul_peak(torch.float32, device), str(half).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16"):
             matmul_peak(half, device)}
    if device.startswith("cuda"):
        peaks["bf16"] = matmul_peak(torch.bfloat16, device)
    # the same peaks in CPU time, for the CPU-time shares (on a shared CPU the wall-clock peak is depressed too)
    cpu_peaks = {name: matmul_peak(DTYPES[name], device, clock=time.process_time) for name in peaks} if device == "cpu" else peaks
    bench = Bench(args, work)
    options = args.options.split(",")
    results: dict[str, Any] = {"model": args.model, "device": device, "peak_flops": peaks, "peak_flops_cpu_time": cpu_peaks, "nfe": {},
                               "load_average_start": os.getloadavg()}
    for nfe in [int(n) for n in args.nfe.split(",")]:
        flops = bench.flops(nfe)
        bench.ours("fp32", nfe)  # warm-up: first calls allocate
        row: dict[str, Any] = {"model_flops": flops, "upstream": bench.upstream(nfe)}
        reference_mel = None
        for option in options + (["bf16+compile" if not device.startswith("cuda") else "fp16+compile"] if args.compile else []):
            name, compiled = option.split("+")[0], option.endswith("+compile")
            if compiled:
                bench.ours(name, nfe, compile=True)  # compiles
            measured = bench.ours(name, nfe, compile=compiled)
            if name == "fp32" and not compiled:
                reference_mel = measured["mel"]
            peak = peaks.get(name if name in peaks else "fp32")
            measured.update(flops_per_s=flops / measured["seconds"], peak_share=flops / measured["seconds"] / peak,
                            speedup_vs_upstream=row["upstream"]["seconds"] / measured["seconds"],
                            peak_share_cpu=flops / measured["cpu_seconds"] / cpu_peaks.get(name if name in cpu_peaks else "fp32"),
                            speedup_vs_upstream_cpu=row["upstream"]["cpu_seconds"] / measured["cpu_seconds"])
            row[option] = measured
            print(f"  nfe {nfe} {option}: {measured['seconds']:.1f} s, RTF {measured['rtf']:.2f}, "
                  f"{measured['speedup_vs_upstream']:.2f}x upstream", file=sys.stderr)
        for option in list(row):
            if isinstance(row[option], dict) and "mel" in row[option]:
                row[option]["mel_rel_diff_vs_fp32"] = rel_diff(row[option].pop("mel"), reference_mel) if reference_mel is not None else None
        results["nfe"][str(nfe)] = row
    fast = options[-1] if "int8" not in options[-1] else options[0]
    nfe = int(args.nfe.split(",")[0])
    short = trimmed_reference(bench.ref, 2.1, work / "ref_short.wav")
    full_ref, short_ref = bench.ours(fast, nfe), bench.ours(fast, nfe, ref=short)
    results["reference_length"] = {"option": fast, "nfe": nfe, "full_ref_s": 5.3, "short_ref_s": 2.1,
                                   "full_seconds": full_ref["seconds"], "short_seconds": short_ref["seconds"],
                                   "ratio": short_ref["seconds"] / full_ref["seconds"]}
    if args.ttfa:
        results["ttfa"] = ttfa(bench, fast, nfe)
    if args.long:
        results["long_text"] = long_text(bench, fast, nfe)
    results["load_average_end"] = os.getloadavg()
    return results


def ttfa(bench: Bench, option: str, nfe: int) -> dict[str, Any]:
    """First audio of the streaming path against the full response, three sentences; upstream's streaming too."""
    from f5_tts.infer import utils_infer

    synth = bench.synth(option)
    start = time.perf_counter()
    stream = synth.stream(THREE_SENTENCES, bench.ref, REF_TEXT, seed=0, nfe_step=nfe)
    next(stream)
    first = time.perf_counter() - start
    for _ in stream:
        pass
    stream_total = time.perf_counter() - start
    full = bench.ours(option, nfe, text=THREE_SENTENCES)["seconds"]

    bench.upstream(nfe)  # builds upstream's side
    model, vocoder, ref_audio, ref_text = bench._upstream
    import torchaudio

    audio, sr = torchaudio.load(ref_audio)
    rate = len(ref_text.encode("utf-8")) / (audio.shape[-1] / sr)
    duration = audio.shape[-1] / sr
    batches = utils_infer.chunk_text(THREE_SENTENCES, max_chars=int(rate * (25 - duration)))  # as socket_server.py
    batches = utils_infer.chunk_text(batches[0], max_chars=int(rate * (25 - duration) / 2)) + batches[1:]
    batches = utils_infer.chunk_text(batches[0], max_chars=int(rate * (25 - duration) / 4)) + batches[1:]
    start = time.perf_counter()
    theirs = utils_infer.infer_batch_process((audio, sr), ref_text, batches, model, vocoder, progress=None, device=bench.device,
                                             streaming=True, chunk_size=2048, nfe_step=nfe)
    next(theirs)
    their_first = time.perf_counter() - start
    for _ in theirs:
        pass
    their_total = time.perf_counter() - start
    return {"option": option, "nfe": nfe, "first_audio_s": first, "stream_total_s": stream_total, "full_s": full,
            "ratio": first / full, "upstream_first_audio_s": their_first, "upstream_total_s": their_total,
            "upstream_ratio": their_first / their_total, "first_vs_upstream_first": first / their_first}


def long_text(bench: Bench, option: str, nfe: int) -> dict[str, Any]:
    synth = bench.synth(option)
    seconds = {}
    for batch in (1, 4):
        synth.max_batch = batch
        start = time.perf_counter()
        result = synth.generate(LONG_TEXT, bench.ref, REF_TEXT, seed=0, nfe_step=nfe)
        seconds[batch] = time.perf_counter() - start
    synth.max_batch = 1
    return {"option": option, "nfe": nfe, "chunks": len(result.chunks), "one_at_a_time_s": seconds[1], "batched_4_s": seconds[4],
            "ratio": seconds[4] / seconds[1]}


def table(results: dict[str, Any]) -> str:
    # CPU seconds (the process's, all threads) beside wall seconds: on a shared machine the wall clock
    # also counts the time other jobs held the cores, CPU time only this process's own work
    lines = [f"| {results['model']} on {results['device']}: option | NFE | seconds (CPU s) | RTF | vs upstream infer_process, "
             "wall (CPU) | FLOP/s, wall | share of matmul peak (same dtype), wall (CPU) | mel rel. diff vs fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for nfe, row in results["nfe"].items():
        up = row["upstream"]
        lines.append(f"| upstream infer_process | {nfe} | {up['seconds']:.1f} ({up['cpu_seconds']:.1f}) | {up['rtf']:.2f} | 1.00x | "
                     f"{row['model_flops'] / up['seconds'] / 1e9:.0f} G | | |")
        for option, m in row.items():
            if option in ("upstream", "model_flops"):
                continue
            diff = "" if m["mel_rel_diff_vs_fp32"] is None else f"{m['mel_rel_diff_vs_fp32']:.4f}"
            lines.append(f"| f5app {option} | {nfe} | {m['seconds']:.1f} ({m['cpu_seconds']:.1f}) | {m['rtf']:.2f} | "
                         f"{m['speedup_vs_upstream']:.2f}x ({m['speedup_vs_upstream_cpu']:.2f}x) faster | "
                         f"{m['flops_per_s'] / 1e9:.0f} G | {100 * m['peak_share']:.0f} % ({100 * m['peak_share_cpu']:.0f} %) | {diff} |")
    r = results["reference_length"]
    lines.append(f"| reference {r['short_ref_s']} s vs {r['full_ref_s']} s ({r['option']}, NFE {r['nfe']}) | | "
                 f"{r['short_seconds']:.1f} vs {r['full_seconds']:.1f} | | {r['ratio']:.2f}x the time | | | |")
    if "ttfa" in results:
        t = results["ttfa"]
        lines.append(f"| TTFA: stream's first audio vs full response, three sentences ({t['option']}, NFE {t['nfe']}) | | "
                     f"{t['first_audio_s']:.1f} vs {t['full_s']:.1f} | | {t['ratio']:.2f}x (goal <= 0.25x) | | | |")
        lines.append(f"| TTFA: upstream infer_batch_process streaming, first vs its total | | {t['upstream_first_audio_s']:.1f} vs "
                     f"{t['upstream_total_s']:.1f} | | {t['upstream_ratio']:.2f}x; f5app first audio {t['first_vs_upstream_first']:.2f}x upstream's | | | |")
    if "long_text" in results:
        lt = results["long_text"]
        lines.append(f"| long text ({lt['chunks']} chunks): batches of 4 vs one at a time ({lt['option']}) | | "
                     f"{lt['batched_4_s']:.1f} vs {lt['one_at_a_time_s']:.1f} | | {lt['ratio']:.2f}x | | | |")
    peaks = ", ".join(f"{k} {v / 1e9:.0f} ({results['peak_flops_cpu_time'][k] / 1e9:.0f}) GFLOP/s" for k, v in results["peak_flops"].items())
    lines.append(f"\nmatmul peak (2048², this run), wall (CPU time): {peaks}; load average {results['load_average_start']} -> {results['load_average_end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="f5tts_v1_small", help="f5tts_v1_small | f5tts_v1_base | tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nfe", default="7,32", help="comma-separated step counts")
    parser.add_argument("--options", default=None, help="f5app variants: fp32,bf16,fp16,int8 (default: fp32,bf16,int8 on CPU; fp32,fp16,bf16 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the half-precision variant (compiles first: minutes on a CPU)")
    parser.add_argument("--ttfa", action="store_true", help="time to first audio, three sentences, vs upstream's streaming")
    parser.add_argument("--long", action="store_true", help="a long text in padded batches of 4 vs one chunk at a time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/f5app-bench-speed"))
    args = parser.parse_args(argv)
    args.options = args.options or ("fp32,fp16,bf16" if args.device.startswith("cuda") else "fp32,bf16,int8")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = run(args, args.workdir)
    results["command"] = " ".join(["scripts/bench_speed.py", *(argv if argv is not None else sys.argv[1:])])
    results["table"] = table(results)
    print(results["table"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
