"""Models and human recordings for the evaluation tests, each loaded once per test session.

Module-level caches (not fixtures) so that several test files share one loaded model: pytest
would build a session fixture imported into two modules twice.
"""

from __future__ import annotations

import functools
from pathlib import Path

#: What the speakers of f5-tts's bundled human recordings say (checked by ear; upstream's
#: basic.toml gives the first). main.flac and town.flac are the Speech Accent Archive's
#: "Please call Stella" elicitation and the Rainbow Passage.
HUMAN_CLIPS = {
    "basic/basic_ref_en.wav": "Some call me nature, others call me mother nature.",
    "multi/town.flac": (
        "The difference in the rainbow depends considerably upon the size of the drops, "
        "and the width of the colored band increases as the size of the drops increases."
    ),
    "multi/main.flac": "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
}


def example_path(name: str) -> Path:
    import f5_tts

    return Path(f5_tts.__path__[0]) / "infer/examples" / name


@functools.cache
def tiny_en_transcriber():
    from f5app.config import AsrConfig
    from f5app.speech.asr import build_transcriber

    return build_transcriber(AsrConfig(name="tiny_en", language="en", beam_size=1), device="cpu")


@functools.cache
def human_audio(name: str):
    from f5app.audio.io import read_audio

    return read_audio(example_path(name))


@functools.cache
def resemblyzer_embedder():
    from f5app.config import SpeakerConfig
    from f5app.speech.speaker import build_embedder

    return build_embedder(SpeakerConfig(name="resemblyzer"), device="cpu")


def tiny_wavlm_in_hub_cache(cache_root: Path, repo_id: str = "test-org/tiny-wavlm-sv", commit: str = "f00d" * 10) -> Path:
    """A random-weight WavLMForXVector saved with save_pretrained into the Hugging Face cache layout."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    config = WavLMConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=16, max_bucket_distance=40,
        tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8, classifier_proj_size=8,
    )
    repo = cache_root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    WavLMForXVector(config).save_pretrained(snapshot)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance, written out here independently of jiwer."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def human_meta_lst(folder: Path) -> Path:
    """A Seed-TTS style meta.lst over f5-tts's human recordings: each speaker's clip is the target,
    another clip (a different speaker) the reference; the recording itself is the ground truth."""
    rows = [
        ("town", "basic/basic_ref_en.wav", "multi/town.flac"),
        ("main", "multi/town.flac", "multi/main.flac"),
        ("nature", "multi/main.flac", "basic/basic_ref_en.wav"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{utt}|{HUMAN_CLIPS[ref]}|{example_path(ref)}|{HUMAN_CLIPS[target]}|{example_path(target)}" for utt, ref, target in rows]
    path = folder / "meta.lst"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
