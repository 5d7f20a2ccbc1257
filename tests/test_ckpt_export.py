"""Export and fingerprints: what f5app exports loads in upstream F5-TTS's own loaders with identical
tensors, carries the source's metadata, never clobbers; the fingerprint ignores format and prefixes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt.schema import CheckpointMetadata, ExportRecord, read_metadata
from f5app.ckpt.export import export_weights
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.config import ArchConfig, ModelConfig
from f5app.data.vocab import read_vocab, write_vocab
from f5app.model import build_cfm

VOCAB = [" ", "a", "b", "c", "ã"]
TINY = ModelConfig(name="tiny", arch=ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1))
UPSTREAM_TINY_CFG = dict(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1)


@pytest.fixture(scope="module")
def weights():
    """Model and EMA weights of a tiny CFM that differ from each other (as after some training)."""
    torch.manual_seed(1)
    model = build_cfm(TINY, VOCAB)
    ema_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return {k: v.clone() for k, v in model.state_dict().items()}, ema_state


@pytest.fixture
def checkpoint(tmp_path, weights):
    """An f5app checkpoint folder per docs/architecture.md."""
    model_state, ema_state = weights
    folder = tmp_path / "run" / "checkpoints" / "update_00000042"
    folder.mkdir(parents=True)
    ema_section = {f"ema_model.{k}": v for k, v in ema_state.items()} | {"initted": torch.tensor(True), "step": torch.tensor(42)}
    torch.save(
        {"model_state_dict": model_state, "ema_model_state_dict": ema_section, "optimizer_state_dict": {}, "update": 42},
        folder / "model.pt",
    )
    write_vocab(VOCAB, folder / "vocab.txt")
    record = CheckpointMetadata(id="run/update_00000042/0", name="update_00000042", run_name="run", update=42, schema_version=1)
    (folder / "metadata.json").write_text(record.to_json())
    return folder


def upstream_model(vocab_size=len(VOCAB)):
    from f5_tts.model import CFM, DiT

    return CFM(transformer=DiT(**UPSTREAM_TINY_CFG, text_num_embeds=vocab_size, mel_dim=100))


def assert_same_tensors(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


# ---------------------------------------------------------------------------- interop with upstream


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_export_loads_in_upstream_load_checkpoint_with_identical_tensors(checkpoint, weights, tmp_path, fmt):
    from f5_tts.infer.utils_infer import load_checkpoint

    model_state, ema_state = weights
    exported = export_weights(checkpoint, tmp_path / f"model.{fmt}", fmt=fmt)

    loaded = load_checkpoint(upstream_model(), str(exported), "cpu", dtype=torch.float32, use_ema=True)
    assert_same_tensors(loaded.state_dict(), ema_state)
    if fmt == "pt":  # upstream's use_ema=False reads model_state_dict: the source's live weights
        loaded = load_checkpoint(upstream_model(), str(exported), "cpu", dtype=torch.float32, use_ema=False)
        assert_same_tensors(loaded.state_dict(), model_state)


def test_export_of_model_weights_puts_them_where_upstream_reads_by_default(checkpoint, weights, tmp_path):
    from f5_tts.infer.utils_infer import load_checkpoint

    model_state, _ = weights
    exported = export_weights(checkpoint, tmp_path / "live.safetensors", use_ema=False)
    loaded = load_checkpoint(upstream_model(), str(exported), "cpu", dtype=torch.float32, use_ema=True)
    assert_same_tensors(loaded.state_dict(), model_state)


def test_export_of_a_store_checkpoint_loads_in_upstream_load_model_with_its_vocab(tmp_path, weights):
    """Through the real CheckpointStore and upstream's whole load_model (vocab file -> CFM -> weights)."""
    from ckpt_factory import make_f5app_checkpoint
    from f5_tts.infer.utils_infer import load_model
    from f5_tts.model import DiT

    model_state, _ = weights
    folder = make_f5app_checkpoint(tmp_path / "checkpoints", 7, TINY, VOCAB, val_loss=1.25, state=model_state)
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    exported = export_weights(folder, out_dir)  # a folder: named model.safetensors inside it
    assert exported == out_dir / "model.safetensors"

    loaded = load_model(DiT, UPSTREAM_TINY_CFG, str(exported), vocab_file=str(out_dir / "vocab.txt"), device="cpu")
    assert loaded.vocab_char_map == {token: index for index, token in enumerate(VOCAB)}
    assert_same_tensors({k: v.float() for k, v in loaded.state_dict().items()}, CheckpointReader(folder).weights().state)
    carried = json.loads((out_dir / "model.safetensors.metadata.json").read_text())
    assert carried["source_metadata"]["update"] == 7
    assert carried["source_metadata"]["metrics"]["val_loss"] == 1.25


def test_exported_safetensors_has_upstream_release_layout(checkpoint, tmp_path):
    exported = load_file(str(export_weights(checkpoint, tmp_path / "model.safetensors")))
    assert {"initted", "step"} <= exported.keys()
    assert int(exported["step"]) == 42
    weight_keys = exported.keys() - {"initted", "step"}
    assert weight_keys and all(key.startswith("ema_model.transformer.") for key in weight_keys)


# ---------------------------------------------------------------------------- what travels with it


def test_export_writes_vocab_and_metadata_with_the_source_metadata(checkpoint, weights, tmp_path):
    _, ema_state = weights
    exported = export_weights(checkpoint, tmp_path / "model.pt", fmt="pt")
    assert read_vocab(tmp_path / "vocab.txt") == VOCAB
    record = json.loads((tmp_path / "model.pt.metadata.json").read_text())
    assert ExportRecord.from_dict(record).source == read_metadata(checkpoint), "the source's record, as written"
    assert record["source_metadata"]["update"] == 42 and record["source_metadata"]["lineage"]["mode"] == "scratch"
    export = record["export"]
    assert export["format"] == "pt" and export["file"] == "model.pt" and export["weights"] == "ema"
    assert export["source_kind"] == "f5app checkpoint folder"
    assert export["fingerprint"] == weights_fingerprint(ema_state)
    assert export["vocab_size"] == len(VOCAB)
    assert CheckpointReader(exported).weights().vocab == VOCAB


def test_export_refuses_to_overwrite_and_writes_nothing(checkpoint, tmp_path):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_weights(checkpoint, out)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "run"]

    export_weights(checkpoint, out, overwrite=True)
    assert CheckpointReader(out).weights().state.keys() == CheckpointReader(checkpoint).weights().state.keys()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_export_refuses_a_different_vocab_already_in_the_folder(checkpoint, tmp_path):
    write_vocab([" ", "x"], tmp_path / "vocab.txt")
    with pytest.raises(FileExistsError, match="another vocabulary"):
        export_weights(checkpoint, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()
    assert read_vocab(tmp_path / "vocab.txt") == [" ", "x"]


def test_export_refuses_a_damaged_vocab_already_in_the_folder_as_another_vocabulary(checkpoint, tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b" \n\xff\n")
    with pytest.raises(FileExistsError, match="another vocabulary"):
        export_weights(checkpoint, tmp_path / "model.safetensors")
    assert (tmp_path / "vocab.txt").read_bytes() == b" \n\xff\n"


@pytest.mark.parametrize(("name", "fmt"), [("model.pt", "safetensors"), ("model.safetensors", "pt"), ("model.bin", "pt")])
def test_export_suffix_must_match_the_format(checkpoint, tmp_path, name, fmt):
    with pytest.raises(ValueError, match="must end with"):
        export_weights(checkpoint, tmp_path / name, fmt=fmt)


def test_export_rejects_unknown_format(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="'onnx' is not supported; use one of: safetensors, pt"):
        export_weights(checkpoint, tmp_path / "model.onnx", fmt="onnx")


# ---------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_the_same_across_formats_and_prefixes(checkpoint, weights, tmp_path):
    _, ema_state = weights
    expected = weights_fingerprint(ema_state)
    torch.save({f"module._orig_mod.{k}": v for k, v in ema_state.items()}, tmp_path / "plain.pt")
    save_file({k: v.contiguous() for k, v in ema_state.items()}, str(tmp_path / "plain.safetensors"))
    sources = [
        checkpoint,
        export_weights(checkpoint, tmp_path / "a.safetensors"),
        export_weights(checkpoint, tmp_path / "b.pt", fmt="pt"),
        tmp_path / "plain.pt",
        tmp_path / "plain.safetensors",
    ]
    assert [CheckpointReader(source).fingerprint() for source in sources] == [expected] * len(sources)


def test_fingerprint_tells_ema_and_model_weights_apart(checkpoint):
    assert CheckpointReader(checkpoint).fingerprint(use_ema=True) != CheckpointReader(checkpoint).fingerprint(use_ema=False)


def test_fingerprint_changes_with_any_value_dtype_or_name(weights):
    _, ema_state = weights
    base = weights_fingerprint(ema_state)
    assert len(base) == 64 and int(base, 16) >= 0

    one_value = dict(ema_state)
    key = "transformer.proj_out.bias"
    one_value[key] = ema_state[key].clone()
    one_value[key][0] += 1e-6
    assert weights_fingerprint(one_value) != base

    cast = dict(ema_state)
    cast[key] = ema_state[key].double()
    assert weights_fingerprint(cast) != base

    renamed = dict(ema_state)
    renamed["transformer.proj_out.bias_renamed"] = renamed.pop(key)
    assert weights_fingerprint(renamed) != base


def test_fingerprint_ignores_memory_layout():
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed_copy = tensor.t().contiguous().t()  # same values, column-major storage
    assert not transposed_copy.is_contiguous()
    assert weights_fingerprint({"transformer.w": tensor}) == weights_fingerprint({"transformer.w": transposed_copy})
    assert weights_fingerprint({"transformer.w": torch.ones(2, dtype=torch.bfloat16)})  # no numpy dtype needed


# ---------------------------------------------------------------------------- the format from the name


@pytest.mark.parametrize(("name", "layout"), [("OUT.pt", "pt"), ("OUT.safetensors", "safetensors")])
def test_ckpt_export_picks_the_format_from_the_suffix(checkpoint, tmp_path, capsys, name, layout):
    from f5app.ckpt_cli import main

    out = tmp_path / name
    assert main(["export", str(checkpoint), str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    if layout == "pt":
        payload = torch.load(out, weights_only=True)
        assert {"ema_model_state_dict", "model_state_dict"} <= payload.keys()
    else:
        assert {"initted", "step"} <= load_file(str(out)).keys()
    assert json.loads(out.with_name(out.name + ".metadata.json").read_text())["export"]["format"] == layout


def test_export_into_a_folder_without_a_format_is_safetensors(checkpoint, tmp_path):
    assert export_weights(checkpoint, tmp_path) == tmp_path / "model.safetensors"


def test_ckpt_export_with_a_suffix_that_names_no_format_says_how_to_name_it(checkpoint, tmp_path, capsys):
    from f5app.ckpt_cli import main

    assert main(["export", str(checkpoint), str(tmp_path / "model.bin")]) == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "'.bin' names no export format" in message and ".safetensors or .pt" in message
    assert not (tmp_path / "model.bin").exists()
    assert main(["export", str(checkpoint), str(tmp_path / "model.bin"), "--format", "pt"]) == 1
    assert "must end with .pt" in capsys.readouterr().err


def test_export_never_writes_through_a_planted_symlink(checkpoint, tmp_path):
    """The temporary names an exporter uses are guessable; links planted at them are not followed."""
    import os
    import threading

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    for name in ("model.pt", "vocab.txt", "model.pt.metadata.json"):
        (out_dir / f".{name}.tmp-{os.getpid()}").symlink_to(victim)  # the name the exporter used to write through

    exported = export_weights(checkpoint, out_dir / "model.pt")
    assert victim.read_text() == "precious"
    assert exported.is_file() and not exported.is_symlink() and CheckpointReader(exported).weights().vocab == VOCAB

    (out_dir / f".model.safetensors.tmp-{os.getpid()}-{threading.get_ident()}").symlink_to(victim)
    with pytest.raises(FileExistsError):
        export_weights(checkpoint, out_dir / "model.safetensors")
    assert victim.read_text() == "precious" and not (out_dir / "model.safetensors").exists()
