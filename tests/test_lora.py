"""LoRA fine-tuning (finetune=lora), as a user runs it: real tiny trainings on CPU from an
upstream-format base, adapter checkpoints that know their base, exact resume, refusals of a missing
or different base, merged export read by upstream, and two voices on one base in one process."""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt import lora
from f5app.ckpt.export import export_adapter, export_merged, export_weights
from f5app.ckpt.resolve import ResolutionError, resolve
from f5app.ckpt.schema import ADAPTER_STATE, EMA_ADAPTER_STATE, read_metadata
from f5app.ckpt.validate import validate
from f5app.config import CkptConfig, FinetuneConfig, InferConfig, TrainConfig, to_settings
from f5app.data.vocab import read_vocab
from f5app.errors import UserError
from f5app.model import build_cfm
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANK = 4
EMBED = "transformer.text_embed.text_embed.weight"
REF_TEXT = "the birch canoe slid on the smooth planks"


def lora_overrides(data: Path, base: Path, **extra) -> list[str]:
    # The demo's 20 warm-up updates outlast these runs, so stopping at 2 and resuming to 6 follows
    # the same learning rates as one run to 6 (a longer run would rebuild the decay: schedule.py).
    return tiny_overrides(data, **{"finetune": "lora", "finetune.rank": RANK, "ckpt.path": str(base), "optim.lr": 0.05,
                                   "trainer.save_every": 2, "trainer.val_every": 2, **extra})


def portuguese_folder(voice: Path, root: Path) -> Path:
    """The same clips with Portuguese text: fine-tuning on it grows the vocabulary (ç, ã, ó…)."""
    folder = root / "pt"
    shutil.copytree(voice / "wavs", folder / "wavs")
    lines = ["audio_file|text"] + [f"wavs/{wav.name}|olá, você está ótimo; ação número {i}" for i, wav in enumerate(sorted((voice / "wavs").iterdir()))]
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def newest(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("update_*[0-9]"))[-1]


def compose_once(config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False):
    """conftest's compose_cfg, for module-scoped fixtures."""
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    """An upstream-format base (a tiny model trained for real, exported as upstream's release file),
    LoRA runs on it (straight, and interrupted then resumed), and a second adapter for voices."""
    compose_cfg = compose_once
    root = tmp_path_factory.mktemp("lora")
    voice = make_voice_folder(root / "data")
    pt = portuguese_folder(voice, root / "data")
    train_in_process(compose_cfg, root / "base", tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 4}))
    upstream_dir = root / "upstream"
    upstream_dir.mkdir()
    base = export_weights(newest(root / "base"), upstream_dir / "model_4.safetensors")

    straight, interrupted = root / "straight", root / "interrupted"
    train_in_process(compose_cfg, straight, lora_overrides(pt, base, **{"trainer.max_updates": 6, "ckpt.keep_last": 2}))
    train_in_process(compose_cfg, interrupted, lora_overrides(pt, base, **{"trainer.max_updates": 2, "ckpt.keep_last": 2}))
    train_in_process(compose_cfg, interrupted, lora_overrides(pt, base, **{"trainer.max_updates": 6, "ckpt.keep_last": 2}))
    english = root / "english"
    train_in_process(compose_cfg, english, lora_overrides(voice, base, **{"trainer.max_updates": 2, "optim.lr": 0.2}))
    return {"root": root, "voice": voice, "pt": pt, "base": base, "base_folder": newest(root / "base"),
            "straight": straight, "interrupted": interrupted, "english": english}


def merged_on(base: Path, model, vocab: list[str], record, adapter: dict) -> dict:
    """The base's weights with ``adapter`` folded in, through the same pieces export_merged uses."""
    cfm = lora.base_model(CheckpointReader(base).weights(), model, vocab[: record.base_vocab_size], vocab)
    return lora.merged_state(cfm, record, vocab, adapter)


def infer_settings(compose_cfg, *overrides: str) -> InferConfig:
    return to_settings(compose_cfg("infer", ["progress=false", "nfe_step=4", *overrides]), InferConfig)


def synthesizer(compose_cfg, run_dir: Path, *overrides: str):
    """fp32, so merged and unmerged weights, and peft's model, can be compared to 1e-4 (dtype=auto is
    bf16 on CPUs that have it, where W + BA rounds differently from W and BA apart)."""
    from f5app.inference.synthesizer import Synthesizer

    return Synthesizer.from_config(infer_settings(compose_cfg, "dtype=fp32", *overrides), run_dir)


# ------------------------------------------------------------------------------------------- config


def test_finetune_group_defaults_to_full_and_lora_targets_attention_and_feed_forward(compose_cfg):
    assert to_settings(compose_cfg("train", ["data.path=x"]), TrainConfig).finetune == FinetuneConfig(name="full")
    settings = to_settings(compose_cfg("train", ["data.path=x", "finetune=lora", "finetune.rank=8"]), TrainConfig).finetune
    assert (settings.name, settings.rank, settings.alpha, settings.dropout) == ("lora", 8, 32.0, 0.0)
    assert settings.target_modules == ["to_q", "to_k", "to_v", "to_out.0", "ff.ff.0.0", "ff.ff.2"]


def test_the_linear_layer_table_validation_relies_on_matches_upstreams_dit():
    from ckpt_factory import tiny_model_config

    model = tiny_model_config(conv_layers=2, depth=3)
    cfm = build_cfm(model, [" "] + list(string.ascii_lowercase))
    real = {name: (m.in_features, m.out_features) for name, m in cfm.named_modules() if isinstance(m, torch.nn.Linear)}
    assert lora.dit_linears(model) == real
    targeted = lora.targeted_linears(model, FinetuneConfig().target_modules)
    assert not any("attn_norm" in name or "norm_out" in name or "proj_out" in name for name in targeted), "AdaLN and zero-init layers stay frozen"
    assert len(targeted) == 6 * model.arch.depth


# ------------------------------------------------------------------------------------------- training


def test_lora_trains_a_small_fraction_and_only_the_new_token_rows_of_the_embedding(runs):
    folder = newest(runs["straight"])
    metadata = read_metadata(folder)
    record = metadata.adapter
    vocab = read_vocab(folder / "vocab.txt")
    base_vocab = read_vocab(runs["base"].parent / "vocab.txt")
    assert record.rank == RANK and record.base_vocab_size == len(base_vocab) and vocab[: len(base_vocab)] == base_vocab
    added = len(vocab) - len(base_vocab)
    assert added >= 3, "the Portuguese text grew the vocabulary"

    adapter = torch.load(folder / "model.pt", weights_only=True)[ADAPTER_STATE]
    cfm = build_cfm(replace_model(metadata.model), vocab)
    linears = [m for name, m in cfm.named_modules() if isinstance(m, torch.nn.Linear) and name.endswith(tuple(record.target_modules))]
    expected = sum(RANK * (m.in_features + m.out_features) for m in linears) + added * cfm.transformer.text_embed.text_embed.embedding_dim
    trainable = sum(t.numel() for t in adapter.values())
    assert trainable == expected
    total = sum(p.numel() for p in cfm.parameters())
    assert trainable / total < 0.06, f"{trainable / total:.1%} of the tiny model trains"
    assert adapter[lora.TOKEN_KEY].shape == (added, cfm.transformer.text_embed.text_embed.embedding_dim)


    merged = merged_on(runs["base"], replace_model(metadata.model), vocab, record, CheckpointReader(folder).adapter().state)
    base_embed = CheckpointReader(runs["base"]).weights().state[EMBED]
    assert torch.equal(merged[EMBED][: len(base_vocab) + 1], base_embed), "the base vocabulary's rows are frozen bit for bit"
    assert torch.equal(merged[EMBED][len(base_vocab) + 1 :], CheckpointReader(folder).adapter().state[lora.TOKEN_KEY]), "new rows: the (EMA) adapter's"


def replace_model(recorded: dict):
    from f5app.config import model_config_from_dict

    return model_config_from_dict(recorded)


def test_adapter_checkpoint_is_small_valid_retained_and_records_its_base_exactly(runs):
    folder = newest(runs["straight"])
    result = validate(folder, model=None, vocab_size=None, full=True)
    assert result.ok, result.reason
    assert result.checks[-3:] == ["adapter", "sha256", "finite"]
    full_size = (runs["base_folder"] / "model.pt").stat().st_size
    assert (folder / "model.pt").stat().st_size < 0.2 * full_size
    names = sorted(p.name for p in (runs["straight"] / "checkpoints").glob("update_*"))
    assert names == ["update_00000004", "update_00000006"], "retention keeps the newest two like any run"

    base = read_metadata(folder).adapter.base
    assert base.source == "custom" and base.path == str(runs["base"].resolve()) and base.weights == "ema"
    assert base.fingerprint == CheckpointReader(runs["base"]).fingerprint(use_ema=True)
    assert read_metadata(folder).lineage.finetuned_from.path == str(runs["base"])


def test_interrupted_and_resumed_lora_training_is_bit_identical(runs):
    a = torch.load(newest(runs["straight"]) / "model.pt", weights_only=True)
    b = torch.load(newest(runs["interrupted"]) / "model.pt", weights_only=True)
    for section in (ADAPTER_STATE, EMA_ADAPTER_STATE):
        assert a[section].keys() == b[section].keys()
        for key in a[section]:
            assert torch.equal(a[section][key], b[section][key]), f"{section}.{key} differs after resume"
    first = torch.load(runs["interrupted"] / "checkpoints" / "update_00000004" / "model.pt", weights_only=True)
    assert any(not torch.equal(first[ADAPTER_STATE][k], a[ADAPTER_STATE][k]) for k in a[ADAPTER_STATE]), "the adapter trains"
    meta = read_metadata(newest(runs["interrupted"]))
    assert meta.lineage.mode == "resume" and meta.lineage.resumed_from.update == 2
    assert meta.lineage.finetuned_from.path == str(runs["base"])
    assert meta.metrics.val_loss == read_metadata(newest(runs["straight"])).metrics.val_loss


def test_a_damaged_adapter_checkpoint_is_quarantined_and_the_previous_one_resumed(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["straight"], run)
    damaged = newest(run)
    model = damaged / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    resolution = resolve(CkptConfig(), purpose="train", run_dir=run, model=None)
    assert resolution.chosen.path.name == "update_00000004" and resolution.chosen.base is not None
    assert (run / "checkpoints" / "update_00000006.corrupted").is_dir()


def test_lora_refuses_to_start_from_scratch_and_a_lora_run_refuses_full_resume(runs, compose_cfg, tmp_path):
    with pytest.raises(UserError, match="finetune=lora adapts existing weights"):
        train_in_process(compose_cfg, tmp_path / "scratch", tiny_overrides(runs["voice"], **{"finetune": "lora", "trainer.max_updates": 2}))
    run = tmp_path / "run"
    shutil.copytree(runs["straight"], run)
    with pytest.raises(UserError, match="resume it with finetune=lora"):
        train_in_process(compose_cfg, run, tiny_overrides(runs["pt"], **{"trainer.max_updates": 8}))
    with pytest.raises(UserError, match=r"finetune.rank: 4 -> 8"):
        train_in_process(compose_cfg, run, lora_overrides(runs["pt"], runs["base"], **{"trainer.max_updates": 8, "finetune.rank": 8}))


# ------------------------------------------------------------------------------------------- the base


def test_resolution_shows_the_adapter_and_its_fingerprint_checked_base(runs, capsys):
    from f5app.ckpt_cli import main

    run = runs["straight"]
    status = main(["resolve", "--for", "infer", f"run_dir={run}", "ckpt=last"])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and not line.strip().startswith("source")]
    assert [row[:2] for row in rows] == [["last", "chosen"], ["base:custom", "chosen"]]
    assert f"fingerprint {read_metadata(newest(run)).adapter.base.fingerprint[:16]}… matches" in out
    assert f"on base {runs['base']}" in out.splitlines()[-1]


def test_a_moved_base_is_found_with_ckpt_base_path_and_accepted_by_fingerprint(runs):
    ckpt = CkptConfig(name="custom", path=str(newest(runs["straight"])), infer_chain=["custom"], base_path=str(runs["base_folder"]))
    chosen = resolve(ckpt, purpose="infer", run_dir=runs["straight"], model=None).chosen
    assert chosen.base.path == runs["base_folder"], "the base's own f5app checkpoint holds the same (EMA) weights"


def test_an_adapter_pointed_at_another_base_is_refused_in_one_line_naming_the_expected_base(runs, compose_cfg, tmp_path):
    from ckpt_factory import make_safetensors

    metadata = read_metadata(newest(runs["straight"]))
    other = make_safetensors(tmp_path / "other.safetensors", replace_model(metadata.model), metadata.adapter.base_vocab_size)
    with pytest.raises(ResolutionError) as refused:
        synthesizer(compose_cfg, runs["straight"], f"output_root={runs['straight'].parent}", f"run_name={runs['straight'].name}",
                    "ckpt=last", f"ckpt.base_path={other}")
    message = str(refused.value)
    assert "\n" not in message and isinstance(refused.value, UserError)
    assert f"trained on {runs['base'].resolve()} (fingerprint {metadata.adapter.base.fingerprint[:16]}…)" in message
    assert f"{other} has fingerprint {CheckpointReader(other).fingerprint(use_ema=True)[:16]}… (other weights)" in message
    assert not (runs["straight"] / "checkpoints" / "update_00000006.corrupted").exists(), "a wrong base is not damage"


def test_an_adapter_whose_base_is_gone_is_refused_in_one_line_naming_it(runs, compose_cfg, tmp_path):
    base = tmp_path / "base" / "model.safetensors"
    base.parent.mkdir()
    shutil.copy(runs["base"], base)
    shutil.copy(runs["base"].parent / "vocab.txt", base.parent / "vocab.txt")
    run = tmp_path / "run"
    train_in_process(compose_cfg, run, lora_overrides(runs["voice"], base, **{"trainer.max_updates": 2}))
    fingerprint = read_metadata(newest(run)).adapter.base.fingerprint
    shutil.rmtree(base.parent)
    with pytest.raises(ResolutionError) as refused:
        synthesizer(compose_cfg, run, "ckpt=last")
    message = str(refused.value)
    assert "\n" not in message
    assert f"needs its base {base.resolve()} (fingerprint {fingerprint[:16]}…), which is not available" in message
    assert "ckpt.base_path" in message


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def rewrite_adapter_record(folder: Path, **base_changes) -> None:
    """Change the adapter's base record the way an older or another f5app would have written it:
    adapter.json and metadata.json agree, and metadata.json's checksums match the new adapter.json."""
    from f5app.ckpt.schema import ADAPTER_FILENAME, FileRecord
    from f5app.files import file_digests

    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["adapter"]["base"].update(base_changes)
    (folder / ADAPTER_FILENAME).write_text(json.dumps(metadata["adapter"], indent=2, sort_keys=True) + "\n")
    size = (folder / ADAPTER_FILENAME).stat().st_size
    metadata["files"][ADAPTER_FILENAME] = FileRecord(size, **file_digests(folder / ADAPTER_FILENAME)).to_dict()
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_other_weights_of_the_same_size_and_time_at_the_base_path_are_refused(runs, compose_cfg, tmp_path):
    """The base is recognised by the tensors read, never by its path, size and modification time."""
    from safetensors.torch import load_file, save_file

    from f5app.ckpt.reader import read_base

    base = tmp_path / "base" / "model_4.safetensors"
    base.parent.mkdir()
    shutil.copy2(runs["base"], base)
    ckpt = CkptConfig(name="custom", path=str(newest(runs["straight"])), infer_chain=["custom"], base_path=str(base))
    _, fingerprint = read_base(resolve(ckpt, purpose="infer", run_dir=runs["straight"], model=None).chosen)
    assert fingerprint == read_metadata(newest(runs["straight"])).adapter.base.fingerprint

    before = base.stat()
    other = {key: tensor + 0.5 if tensor.is_floating_point() else tensor for key, tensor in load_file(str(base)).items()}
    save_file(other, str(base))
    os.utime(base, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (base.stat().st_size, base.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(ResolutionError, match=r"has fingerprint [0-9a-f]{16}… \(other weights\)"):
        synthesizer(compose_cfg, runs["straight"], f"output_root={runs['straight'].parent}", f"run_name={runs['straight'].name}",
                    "ckpt=last", f"ckpt.base_path={base}")


def test_an_edited_adapter_record_fails_full_validation_and_loading(runs, compose_cfg, tmp_path):
    from f5app.ckpt_cli import main

    run = copy_run(runs["straight"], tmp_path / "run")
    folder = newest(run)
    text = (folder / "metadata.json").read_text()
    assert '"alpha": 32.0' in text
    (folder / "metadata.json").write_text(text.replace('"alpha": 32.0', '"alpha": 3200.0'))
    assert main(["validate", "--full", str(folder)]) == 1
    assert "differs from adapter.json" in validate(folder, model=None, vocab_size=None, full=True).reason
    with pytest.raises(ResolutionError, match="differs from adapter.json"):
        synthesizer(compose_cfg, run, "ckpt=custom", f"ckpt.path={folder}")

    # the same edit in both files, of the same length: only adapter.json's checksum can tell
    run = copy_run(runs["straight"], tmp_path / "run2")
    folder = newest(run)
    for name in ("metadata.json", "adapter.json"):
        (folder / name).write_text((folder / name).read_text().replace('"alpha": 32.0', '"alpha": 99.0'))
    assert validate(folder, model=None, vocab_size=None, full=False).ok, "sizes and the record agree"
    assert "adapter.json: sha256" in validate(folder, model=None, vocab_size=None, full=True).reason
    with pytest.raises(ResolutionError, match="adapter.json changed since it was saved"):
        synthesizer(compose_cfg, run, "ckpt=custom", f"ckpt.path={folder}")


def test_an_adapter_without_a_base_fingerprint_loads_only_with_trust_base(runs, compose_cfg, tmp_path):
    run = copy_run(runs["straight"], tmp_path / "run")
    rewrite_adapter_record(newest(run), fingerprint=None)
    assert validate(newest(run), model=None, vocab_size=None, full=True).ok
    with pytest.raises(ResolutionError, match="records no fingerprint of its base.*ckpt.trust_base=true"):
        synthesizer(compose_cfg, run, "ckpt=last")
    synth = synthesizer(compose_cfg, run, "ckpt=last", "ckpt.trust_base=true")
    assert "on base" in synth.source


def test_a_hub_base_is_taken_only_at_the_recorded_commit(runs, tmp_path):
    from ckpt_factory import make_hub_cache

    run = copy_run(runs["straight"], tmp_path / "run")
    hub = dict(source="pretrained", repo_id="someone/voices", filename="base/model_4.safetensors", vocab_filename="base/vocab.txt")
    rewrite_adapter_record(newest(run), **hub, revision="main")
    ckpt = CkptConfig(name="last", infer_chain=["last"], cache_dir=str(tmp_path / "hub"))
    make_hub_cache(tmp_path / "hub", hub["repo_id"], {hub["filename"]: runs["base"], hub["vocab_filename"]: runs["base"].parent / "vocab.txt"})
    with pytest.raises(ResolutionError, match="recorded at revision main, not at a commit"):
        resolve(ckpt, purpose="infer", run_dir=run, model=None)

    rewrite_adapter_record(newest(run), revision="0" * 40)  # the commit make_hub_cache stores
    chosen = resolve(ckpt, purpose="infer", run_dir=run, model=None).chosen
    assert chosen.base.path.parent.parent.name == "0" * 40 and chosen.base.source == "pretrained"
    rewrite_adapter_record(newest(run), revision="1" * 40)  # another commit: not in the cache, never fetched offline
    with pytest.raises(ResolutionError, match="revision 1111"):
        resolve(ckpt, purpose="infer", run_dir=run, model=None)


# ------------------------------------------------------------------------------------------- inference and export


def same_speech(synth, ref: Path, text="olá, você está ótimo", seed=3):
    return synth.generate(text, str(ref), REF_TEXT, seed=seed)


def test_merged_export_loads_in_upstream_and_speaks_like_base_plus_adapter(runs, compose_cfg, tmp_path):
    from f5_tts.infer.utils_infer import load_model
    from f5_tts.model import DiT

    folder = newest(runs["straight"])
    unmerged = synthesizer(compose_cfg, runs["straight"], "ckpt=last")
    assert "on base" in unmerged.source
    out = export_merged(folder, tmp_path / "merged.safetensors")
    metadata = read_metadata(folder)
    arch = {k: v for k, v in metadata.model["arch"].items() if k in ("dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers")}
    upstream = load_model(DiT, arch, str(out), vocab_file=str(tmp_path / "vocab.txt"), device="cpu")
    merged_state = merged_on(runs["base"], replace_model(metadata.model), read_vocab(folder / "vocab.txt"), metadata.adapter,
                                     CheckpointReader(folder).adapter().state)
    upstream_state = {k: v.float() for k, v in upstream.state_dict().items() if not k.startswith("mel_spec.")}
    assert upstream_state.keys() == merged_state.keys()
    assert all(torch.equal(upstream_state[k], merged_state[k]) for k in merged_state)

    merged = synthesizer(compose_cfg, runs["straight"], "ckpt=custom", f"ckpt.path={out}")
    ref = runs["voice"] / "wavs" / "clip00.wav"
    a, b = same_speech(unmerged, ref), same_speech(merged, ref)
    assert a.mel.shape == b.mel.shape and np.allclose(a.mel, b.mel, atol=1e-4), np.abs(a.mel - b.mel).max()
    plain_base = synthesizer(compose_cfg, runs["straight"], "ckpt=custom", f"ckpt.path={runs['base']}", "model=tiny")
    assert not np.allclose(same_speech(plain_base, ref, text="ola").mel, same_speech(unmerged, ref, text="ola").mel, atol=1e-4), "the adapter changes the model"


def test_the_adapter_alone_exports_in_peft_layout_that_peft_loads(runs, compose_cfg, tmp_path):
    from peft import PeftModel

    folder = newest(runs["straight"])
    out = export_adapter(folder, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "vocab.txt", "f5app_adapter.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "f5app_adapter.json").read_text())["export"]["base"]["fingerprint"] == read_metadata(folder).adapter.base.fingerprint
    metadata = read_metadata(folder)
    vocab = read_vocab(out / "vocab.txt")
    cfm = lora.base_model(CheckpointReader(runs["base"]).weights(), replace_model(metadata.model), vocab[: metadata.adapter.base_vocab_size], vocab)
    loaded = PeftModel.from_pretrained(cfm, str(out)).eval()
    ours = synthesizer(compose_cfg, runs["straight"], "ckpt=last")
    cond = torch.randn(1, 40, 100, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs_mel, _ = loaded.sample(cond=cond, text=[list("olá ação")], duration=80, steps=4, seed=1)
        ours_mel, _ = ours.cfm.sample(cond=cond, text=[list("olá ação")], duration=80, steps=4, seed=1)
    assert torch.allclose(theirs_mel, ours_mel, atol=1e-5)


def test_two_voices_from_two_adapters_share_one_base_in_memory(runs, compose_cfg):
    portuguese, english = newest(runs["straight"]), newest(runs["english"])
    ref = runs["voice"] / "wavs" / "clip00.wav"
    voices = [f"+voices.{name}.{key}={value}" for name, adapter in (("pt", portuguese), ("en", english))
              for key, value in (("adapter", adapter), ("ref_audio", ref), ("ref_text", REF_TEXT))]
    synth = synthesizer(compose_cfg, runs["straight"], "ckpt=custom", f"ckpt.path={runs['base']}", "model=tiny", *voices)

    def base_tensors():
        return {name: p.data_ptr() for name, p in synth.cfm.named_parameters() if "lora_" not in name and "trainable_tokens" not in name}

    before = base_tensors()
    both = synth.generate("[pt] olá ação [en] the juice of lemons", seed=5)
    assert [voice for voice, _ in both.chunks] == ["pt", "en"]
    pt_alone = synth.generate("[pt] olá ação", seed=5)
    en_alone = synth.generate("[en] the juice of lemons", seed=5)
    assert base_tensors() == before, "switching voices never copies or replaces the base"
    base_numel = sum(p.numel() for p in build_cfm(replace_model(read_metadata(portuguese).model), synth.vocab).parameters())
    assert sum(p.numel() for p in synth.cfm.parameters()) == base_numel + sum(
        t.numel() for name in ("pt", "en") for t in lora.adapter_state(synth.cfm, name).values()), "one base, plus each adapter"
    assert synth.adapters.adapter_bytes("pt") < 0.1 * base_numel * 4

    single = synthesizer(compose_cfg, runs["straight"], "ckpt=last")
    alone = single.generate("olá ação", str(ref), REF_TEXT, seed=5)
    assert np.allclose(pt_alone.mel, alone.mel, atol=1e-5), "a voice speaks exactly as its adapter does alone"
    en_says_it = synth.generate("[en] olá ação", seed=5)
    assert not np.allclose(en_says_it.mel, pt_alone.mel, atol=1e-4), "the other voice speaks with its own adapter"
    assert en_alone.mel.shape[0] == pt_alone.mel.shape[0]
    main_voice = synth.generate("olá ação", str(ref), REF_TEXT, seed=5)
    assert not np.allclose(main_voice.mel, pt_alone.mel, atol=1e-4), "the main voice is the base without adapter"
    plain = synthesizer(compose_cfg, runs["straight"], "ckpt=custom", f"ckpt.path={runs['base']}", "model=tiny")
    main_says = synth.generate("the juice of lemons", str(ref), REF_TEXT, seed=5)
    assert np.allclose(main_says.mel, plain.generate("the juice of lemons", str(ref), REF_TEXT, seed=5).mel, atol=1e-5)


def test_a_voice_adapter_trained_on_another_base_is_refused_by_name(runs, compose_cfg, tmp_path):
    from ckpt_factory import make_safetensors

    metadata = read_metadata(newest(runs["english"]))
    other = make_safetensors(tmp_path / "other.safetensors", replace_model(metadata.model), metadata.adapter.base_vocab_size)
    shutil.copy(runs["base"].parent / "vocab.txt", tmp_path / "vocab.txt")
    ref = runs["voice"] / "wavs" / "clip00.wav"
    with pytest.raises(UserError, match=r"voices.en.adapter=.* was trained on .*, not on the loaded base"):
        synthesizer(compose_cfg, runs["english"], "ckpt=custom", f"ckpt.path={other}", "model=tiny",
                    f"+voices.en.adapter={newest(runs['english'])}", f"+voices.en.ref_audio={ref}", f"+voices.en.ref_text={REF_TEXT}")


def test_targets_that_name_no_linear_layer_are_refused_before_training():
    from ckpt_factory import tiny_model_config

    from f5app.ckpt.schema import AdapterRecord

    cfm = build_cfm(tiny_model_config(), [" ", "a"])
    for targets, why in (((["to_q", "attn"]), "are not linear layers"), ((["to_qq"]), r"\['to_qq'\] match no linear layer")):
        with pytest.raises(UserError, match=why):
            lora.attach(cfm, AdapterRecord(rank=2, alpha=2.0, target_modules=tuple(targets), base_vocab_size=2), 2)


def test_the_ckpt_cli_shows_an_adapter_and_exports_it_only_merged_or_as_peft(runs, tmp_path, capsys):
    from f5app.ckpt_cli import main

    folder = newest(runs["straight"])
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"adapter       lora rank {RANK} alpha" in out and f"base          {runs['base'].resolve()} (fingerprint" in out
    assert main(["export", str(folder), str(tmp_path / "plain.safetensors")]) == 1
    assert "LoRA adapter checkpoint (no full weights)" in capsys.readouterr().err
    assert main(["export", str(folder), str(tmp_path / "as_peft")]) == 0
    assert (tmp_path / "as_peft" / "adapter_model.safetensors").is_file()
    assert main(["export", str(runs["base_folder"]), str(tmp_path / "m.safetensors"), "--merge"]) == 1
    assert "is not an adapter checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_lora_run_is_evaluated_while_training_and_f5app_eval_scores_its_adapter_checkpoint_the_same(runs, tmp_path):
    """Evaluation during LoRA training scores the base with the averaged adapter; the adapter
    checkpoint records the scores, and f5app.eval (which resolves the adapter and its base) reproduces them."""
    import f5app.eval as eval_cli

    run_dir = tmp_path / "lora_eval"
    evaluation = {"eval.every": 2, "eval.num_prompts": 2, "eval.nfe_step": 4, "asr.beam_size": 1, "vocoder.n_iter": 4}
    train_in_process(compose_once, run_dir, lora_overrides(runs["voice"], runs["base"], **{**evaluation, "trainer.max_updates": 2}))
    checkpoint = newest(run_dir)
    metadata = read_metadata(checkpoint)
    assert metadata.adapter is not None and metadata.metrics.eval is not None and metadata.metrics.eval.num_prompts == 2
    assert [point[0] for point in metadata.metrics.eval_history] == [2]

    overrides = [f"run_dir={run_dir}", "ckpt=last", "device=cpu", f"out={tmp_path / 'again.json'}"]
    record = eval_cli.run(compose_once("eval", overrides), overrides=overrides)
    assert record["checkpoint"]["path"] == str(checkpoint) and record["checkpoint"]["update"] == 2
    assert (record["metrics"]["wer"], record["metrics"]["cer"]) == (metadata.metrics.eval.wer, metadata.metrics.eval.cer)
    assert record["metrics"]["sim"] == pytest.approx(metadata.metrics.eval.sim, abs=1e-6)
    spoken_in_training = sorted((run_dir / "eval" / "update_00000002").glob("*.wav"))
    spoken_again = sorted((tmp_path / "again").glob("*.wav"))
    assert [p.name for p in spoken_again] == [p.name for p in spoken_in_training] and spoken_again
    for again, trained in zip(spoken_again, spoken_in_training):
        assert again.read_bytes() == trained.read_bytes(), again.name  # the same samples, so the ASR hears the same
