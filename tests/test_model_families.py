"""Every upstream model family (F5TTS_Base v0, F5TTS_Small, E2TTS_Base, E2TTS_Small) is a preset with
upstream's exact architecture, is recognised from a file's shapes, and can be loaded from upstream's
layout (also as ``hf://OWNER/REPO/FILE``), synthesised with and fine-tuned from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import f5_tts
import pytest
import torch
from omegaconf import OmegaConf

from ckpt_factory import make_hub_cache
from f5app.ckpt.arch import canonical_shapes, describe_fit, matching_presets
from f5app.ckpt.resolve import ResolutionError, resolve
from f5app.config import CkptConfig, InferConfig, ModelConfig, model_presets, to_settings
from f5app.model import build_cfm
from infer_fixtures import TINY_VOCAB, UPSTREAM_REF_TEXT, upstream_ref_wav, upstream_trainer_pt
from train_fixtures import make_voice_folder, tiny_overrides, train_in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: our preset -> (upstream's config file, upstream's backbone class)
FAMILIES = {
    "f5tts_base": ("F5TTS_Base", "DiT"),
    "f5tts_small": ("F5TTS_Small", "DiT"),
    "e2tts_base": ("E2TTS_Base", "UNetT"),
    "e2tts_small": ("E2TTS_Small", "UNetT"),
}
UPSTREAM_CONFIGS = Path(f5_tts.__path__[0]) / "configs"
#: the same layout at a size that trains and samples in well under a second (UNetT wants an even depth)
REDUCED = {"model.arch.dim": 64, "model.arch.depth": 2, "model.arch.heads": 2}


def preset(compose_cfg, family: str, *overrides: str) -> ModelConfig:
    return to_settings(compose_cfg("train", [f"model={family}", "data.path=x", *overrides]).model, ModelConfig)


def shapes_of(model: ModelConfig, vocab: list[str] = TINY_VOCAB) -> dict[str, tuple[int, ...]]:
    """Canonical shapes of the real model, built on the meta device (no memory, milliseconds)."""
    with torch.device("meta"):
        cfm = build_cfm(model, vocab)
    return canonical_shapes({k: tuple(v.shape) for k, v in cfm.state_dict().items()})


@pytest.mark.parametrize("family", FAMILIES)
def test_each_preset_builds_upstreams_exact_architecture(compose_cfg, family):
    upstream_name, backbone = FAMILIES[family]
    upstream = OmegaConf.to_container(OmegaConf.load(UPSTREAM_CONFIGS / f"{upstream_name}.yaml").model)
    ours = preset(compose_cfg, family)

    assert ours.backbone == upstream["backbone"] == backbone
    for key, value in upstream["arch"].items():
        assert getattr(ours.arch, key) == value, key
    for key, value in upstream["mel_spec"].items():
        assert getattr(ours.mel, key) == value, key
    # Built as upstream's trainer builds it (model_cls(**arch, text_num_embeds, mel_dim)): same tensors.
    module = {"DiT": "dit", "UNetT": "unett"}[backbone]
    upstream_cls = getattr(__import__(f"f5_tts.model.backbones.{module}", fromlist=[backbone]), backbone)
    with torch.device("meta"):
        reference = upstream_cls(**upstream["arch"], text_num_embeds=len(TINY_VOCAB), mel_dim=100)
    expected = {f"transformer.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    assert shapes_of(ours) == expected


@pytest.mark.parametrize(("family", "fits"), [
    ("f5tts_base", ["f5tts_base", "f5tts_v1_base"]),
    ("f5tts_small", ["f5tts_small", "f5tts_v1_small"]),
    ("e2tts_base", ["e2tts_base"]),
    ("e2tts_small", ["e2tts_small"]),
])
def test_a_files_shapes_name_its_family_and_v0_and_v1_are_said_to_be_indistinguishable(compose_cfg, family, fits):
    shapes = shapes_of(preset(compose_cfg, family))
    assert matching_presets(shapes, model_presets()) == fits
    fit = describe_fit(shapes, model_presets())
    if len(fits) == 1:
        assert fit == f"its shapes fit model={fits[0]}"
    else:
        assert "alike" in fit and "name the one it was trained as with model=" in fit


def test_an_e2_file_loaded_as_a_dit_is_refused_naming_the_backbone(compose_cfg, tmp_path):
    e2 = preset(compose_cfg, "e2tts_small", *(f"{k}={v}" for k, v in REDUCED.items()))
    weights = upstream_trainer_pt(tmp_path / "e2" / "model_2.pt", model_config=e2)
    ckpt = CkptConfig(name="custom", path=str(weights), train_chain=["custom"])
    dit = replace(e2, backbone="DiT", arch=replace(e2.arch, text_dim=32, conv_layers=1))
    with pytest.raises(ResolutionError, match=r"backbone \(DiT blocks or UNetT layers\): file UNetT, config DiT"):
        resolve(ckpt, purpose="train", run_dir=tmp_path / "run", model=dit, vocab_size=len(TINY_VOCAB))


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"), count=4)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_from_upstreams_layout_speaks_and_fine_tunes(compose_cfg, family, voice, tmp_path):
    from f5app.inference.synthesizer import Synthesizer

    sizes = [f"{k}={v}" for k, v in REDUCED.items()]
    model = preset(compose_cfg, family, *sizes)
    # Upstream's trainer layout (model/EMA state dicts, no config), its vocab.txt beside it, served
    # from a Hugging Face cache the way upstream's CLI names it: hf://OWNER/REPO/FILE.
    weights = upstream_trainer_pt(tmp_path / "upstream" / "model_2.pt", model_config=model)
    cache = make_hub_cache(tmp_path / "hf", "someone/voices", {
        f"{family}/model_2.pt": weights, f"{family}/vocab.txt": weights.parent / "vocab.txt"})
    hub_path = f"hf://someone/voices/{family}/model_2.pt"

    ckpt = CkptConfig(name="custom", path=hub_path, cache_dir=str(cache), infer_chain=["custom"])
    chosen = resolve(ckpt, purpose="infer", run_dir=tmp_path / "run", model=model).chosen
    assert chosen.kind == "upstream_pt" and chosen.vocab_path.read_text(encoding="utf-8").split("\n")[:-1] == TINY_VOCAB

    infer = to_settings(compose_cfg("infer", [
        f"model={family}", *sizes, "ckpt=custom", f"ckpt.path={hub_path}", f"ckpt.cache_dir={cache}",
        "vocoder=griffinlim", "vocoder.n_iter=2", "nfe_step=2", "progress=false", "device=cpu"]), InferConfig)
    synth = Synthesizer.from_config(infer, tmp_path / "run")
    assert type(synth.cfm.transformer).__name__ == FAMILIES[family][1]
    wav, sr = synth.synthesize("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert sr == 24000 and wav.size > 0 and bool(torch.isfinite(torch.from_numpy(wav)).all())

    run = tmp_path / "finetuned"
    train_in_process(compose_cfg, run, tiny_overrides(voice, **{
        "model": family, **REDUCED, "ckpt.path": hub_path, "ckpt.cache_dir": str(cache),
        "trainer.max_updates": 2, "trainer.save_every": 2}))
    meta = json.loads((run / "checkpoints" / "update_00000002" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["lineage"]["mode"] == "finetune" and meta["model"]["backbone"] == FAMILIES[family][1]
    assert meta["model"]["name"] == family
