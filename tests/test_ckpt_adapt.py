"""Weight adapters: every supported container and key layout loads into a CFM with identical tensors,
known differences are adapted and reported, anything else is refused with a readable list."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from safetensors.torch import save_file

from f5app.ckpt.adapt import TEXT_EMBED_KEY, WeightsMismatch, adapt_cached, load_into
from f5app.ckpt.reader import CheckpointReader, UnreadableWeights
from f5app.ckpt.keys import DuplicateWeightKeys, canonicalize, normalize_key
from f5app.config import ArchConfig, ModelConfig
from f5app.data.vocab import write_vocab
from f5app.model import build_cfm

VOCAB = [" ", "a", "b", "c", "d", "e"]
TINY = ModelConfig(name="tiny", arch=ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1))


@pytest.fixture(scope="module")
def trained():
    """A tiny CFM and its upstream EMA (ema_pytorch, as upstream's Trainer makes it), with different weights."""
    from ema_pytorch import EMA

    torch.manual_seed(0)
    model = build_cfm(TINY, VOCAB)
    ema = EMA(model, include_online_model=False)
    ema.initted.fill_(True)
    ema.step.fill_(42)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    ema_state = {k.removeprefix("ema_model."): v.clone() for k, v in ema.state_dict().items() if k.startswith("ema_model.")}
    return model, ema, model_state, ema_state


def fresh_model(vocab=VOCAB, model_config=TINY):
    return build_cfm(model_config, vocab)


def assert_same_tensors(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        assert torch.equal(actual[key], expected[key]), key


def save_upstream_trainer_checkpoint(model, ema, path, update=42):
    """What upstream's Trainer.save_checkpoint writes (model_last.pt / model_<update>.pt)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-8, end_factor=1.0, total_iters=10)
    torch.save(
        dict(
            model_state_dict=model.state_dict(),
            optimizer_state_dict=optimizer.state_dict(),
            ema_model_state_dict=ema.state_dict(),
            scheduler_state_dict=scheduler.state_dict(),
            update=update,
        ),
        path,
    )


# ---------------------------------------------------------------------------- key names


@pytest.mark.parametrize(
    "raw",
    [
        "transformer.time_embed.time_mlp.0.weight",
        "ema_model.transformer.time_embed.time_mlp.0.weight",
        "ema.transformer.time_embed.time_mlp.0.weight",
        "module.transformer.time_embed.time_mlp.0.weight",
        "_orig_mod.transformer.time_embed.time_mlp.0.weight",
        "module._orig_mod.transformer.time_embed.time_mlp.0.weight",
        "_orig_mod.module.transformer.time_embed.time_mlp.0.weight",
        "ema_model.module._orig_mod.transformer.time_embed.time_mlp.0.weight",
    ],
)
def test_normalize_key_strips_wrapper_prefixes_in_any_order(raw):
    assert normalize_key(raw) == "transformer.time_embed.time_mlp.0.weight"


@pytest.mark.parametrize(
    "raw",
    ["initted", "step", "update", "ema_model.step", "mel_spec.mel_stft.mel_scale.fb", "ema_model.mel_spec.mel_stft.spectrogram.window"],
)
def test_normalize_key_drops_non_weight_entries(raw):
    assert normalize_key(raw) is None


def test_normalize_key_keeps_every_key_of_a_built_model(trained):
    _, _, model_state, _ = trained
    assert all(normalize_key(key) == key for key in model_state)  # persistent buffers like rotary inv_freq included


def test_canonicalize_refuses_two_copies_of_one_weight():
    with pytest.raises(DuplicateWeightKeys, match="module.transformer.a"):
        canonicalize({"transformer.a": 1, "module.transformer.a": 2})


# ---------------------------------------------------------------------------- containers


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "ema."])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_plain_state_dict_in_each_key_layout_loads_identically(trained, tmp_path, prefix, suffix):
    _, _, model_state, _ = trained
    path = tmp_path / f"weights{suffix}"
    raw = {prefix + key: tensor for key, tensor in model_state.items()}
    torch.save(raw, path) if suffix == ".pt" else save_file(raw, str(path))

    read = CheckpointReader(path).weights()
    assert_same_tensors(read.state, model_state)
    if prefix:
        assert f"stripped {prefix!r} prefix from {len(model_state)} keys" in read.notes
    else:
        assert read.notes == []
    target = fresh_model()
    load_into(target, read.state, old_vocab=None, new_vocab=None)
    assert_same_tensors(target.state_dict(), model_state)


def test_legacy_non_zip_torch_file_still_loads(trained, tmp_path):
    _, _, model_state, _ = trained
    path = tmp_path / "old_format.pt"
    torch.save({"module." + k: v for k, v in model_state.items()}, path, _use_new_zipfile_serialization=False)
    assert_same_tensors(CheckpointReader(path).weights().state, model_state)


def test_upstream_trainer_checkpoint_gives_ema_or_model_weights(trained, tmp_path):
    model, ema, model_state, ema_state = trained
    path = tmp_path / "model_last.pt"
    save_upstream_trainer_checkpoint(model, ema, path)

    from_ema = CheckpointReader(path).weights(use_ema=True)
    assert from_ema.source_kind == "upstream trainer checkpoint (.pt)"
    assert from_ema.weights == "ema"
    assert_same_tensors(from_ema.state, ema_state)
    assert f"stripped 'ema_model.' prefix from {len(ema_state)} keys" in from_ema.notes
    assert "dropped non-weight entries: initted, step" in from_ema.notes

    from_model = CheckpointReader(path).weights(use_ema=False)
    assert_same_tensors(from_model.state, model_state)
    assert not torch.equal(from_model.state[TEXT_EMBED_KEY], from_ema.state[TEXT_EMBED_KEY])

    target = fresh_model()
    load_into(target, from_ema.state, old_vocab=None, new_vocab=None)
    assert_same_tensors(target.state_dict(), ema_state)


def test_upstream_released_ema_safetensors_with_old_mel_buffers_loads(trained, tmp_path):
    _, ema, _, ema_state = trained
    released = dict(ema.state_dict())
    # Files from before upstream commit 305e3ea also carry the mel filter bank and window.
    released["ema_model.mel_spec.mel_stft.mel_scale.fb"] = torch.rand(513, 100)
    released["ema_model.mel_spec.mel_stft.spectrogram.window"] = torch.hann_window(1024)
    path = tmp_path / "model_1250000.safetensors"
    save_file(released, str(path))

    read = CheckpointReader(path).weights()
    assert read.source_kind.startswith("EMA-only safetensors")
    assert_same_tensors(read.state, ema_state)
    assert "dropped non-weight entries: initted, step" in read.notes
    assert (
        "dropped mel-spectrogram buffers (recomputed by the model): "
        "mel_spec.mel_stft.mel_scale.fb, mel_spec.mel_stft.spectrogram.window"
    ) in read.notes
    target = fresh_model()
    load_into(target, read.state, old_vocab=None, new_vocab=None)
    assert_same_tensors(target.state_dict(), ema_state)


def test_missing_ema_falls_back_to_model_weights_and_says_so(trained, tmp_path):
    _, _, model_state, _ = trained
    path = tmp_path / "no_ema.pt"
    torch.save({"model_state_dict": model_state, "update": 3}, path)

    read = CheckpointReader(path).weights(use_ema=True)
    assert read.weights == "model"
    assert_same_tensors(read.state, model_state)
    assert "no EMA weights in the file; using its model weights" in read.notes


def test_f5app_checkpoint_folder_reads_weights_and_vocab(trained, tmp_path):
    model, ema, _, ema_state = trained
    folder = tmp_path / "update_00000042"
    folder.mkdir()
    save_upstream_trainer_checkpoint(model, ema, folder / "model.pt")
    write_vocab(VOCAB, folder / "vocab.txt")

    read = CheckpointReader(folder).weights()
    assert read.source_kind == "f5app checkpoint folder"
    assert read.vocab == VOCAB
    assert_same_tensors(read.state, ema_state)


def test_folder_with_an_exported_safetensors_reads_like_the_file(trained, tmp_path):
    _, ema, _, ema_state = trained
    save_file(ema.state_dict(), str(tmp_path / "model.safetensors"))
    write_vocab(VOCAB, tmp_path / "vocab.txt")
    read = CheckpointReader(tmp_path).weights()
    assert_same_tensors(read.state, ema_state)
    assert read.vocab == VOCAB


def test_folder_without_weights_names_what_it_looked_for(tmp_path):
    with pytest.raises(UnreadableWeights, match="without model.pt or model.safetensors"):
        CheckpointReader(tmp_path).weights()


def test_vocab_beside_a_weights_file_is_found(trained, tmp_path):
    _, _, model_state, _ = trained
    torch.save(model_state, tmp_path / "weights.pt")
    assert CheckpointReader(tmp_path / "weights.pt").weights().vocab is None
    write_vocab(VOCAB, tmp_path / "vocab.txt")
    assert CheckpointReader(tmp_path / "weights.pt").weights().vocab == VOCAB


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model_state_dict": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    # a torch zip reaches torch's safe loader, which refuses the global; a bare pickle is refused
    # before any unpickler sees it (torch's legacy loader would try it as a tar archive first)
    why = "it needs more than tensors" if writer == "torch.save" else "not a PyTorch checkpoint"
    with pytest.raises(UnreadableWeights, match=f"refusing to load .*evil.pt: {why}") as caught:
        CheckpointReader(path).weights()
    assert not marker.exists()
    assert "\n" not in str(caught.value) and "weights_only` set to `False`" not in str(caught.value)


def test_file_with_two_copies_of_a_weight_is_unreadable(trained, tmp_path):
    _, _, model_state, _ = trained
    both = {**model_state, **{"module." + k: v for k, v in model_state.items()}}
    torch.save(both, tmp_path / "twice.pt")
    with pytest.raises(UnreadableWeights, match="twice.pt: torch state dict: keys .* both name weight"):
        CheckpointReader(tmp_path / "twice.pt").weights()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_garbage_files_are_unreadable_weights(tmp_path, content):
    for name in ("junk.pt", "junk.safetensors"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnreadableWeights, match=name) as caught:
            CheckpointReader(tmp_path / name).weights()
        assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- vocab growth and mismatches


def test_vocab_growth_keeps_old_rows_bit_identical_in_model_and_ema(trained):
    _, _, model_state, ema_state = trained
    grown_vocab = VOCAB + ["ã", "õ", "ç"]
    model, ema = fresh_model(grown_vocab), fresh_model(grown_vocab)

    model_report = load_into(model, model_state, old_vocab=VOCAB, new_vocab=grown_vocab)
    load_into(ema, ema_state, old_vocab=VOCAB, new_vocab=grown_vocab)

    old_rows = len(VOCAB) + 1  # row 0 is upstream's filler token
    for loaded, source in ((model, model_state), (ema, ema_state)):
        embedding = loaded.state_dict()[TEXT_EMBED_KEY]
        assert embedding.shape == (len(grown_vocab) + 1, TINY.arch.text_dim)
        assert torch.equal(embedding[:old_rows], source[TEXT_EMBED_KEY])
        for key in source:
            if key != TEXT_EMBED_KEY:
                assert torch.equal(loaded.state_dict()[key], source[key]), key
    new_rows_model = model.state_dict()[TEXT_EMBED_KEY][old_rows:]
    assert torch.equal(new_rows_model, ema.state_dict()[TEXT_EMBED_KEY][old_rows:])
    assert new_rows_model.std() > 0.5  # initialised, not left at zero
    assert any("grew the text embedding from 6 to 9 tokens (3 new: 'ã', 'õ', 'ç')" in note for note in model_report.notes)


def test_vocab_growth_maps_old_characters_to_their_old_rows(trained):
    _, _, model_state, _ = trained
    grown_vocab = VOCAB + ["ã"]
    model = fresh_model(grown_vocab)
    load_into(model, model_state, old_vocab=VOCAB, new_vocab=grown_vocab)
    text = torch.tensor([[grown_vocab.index("c"), -1]])  # "c" then batch padding, as upstream collates
    embed = model.transformer.text_embed.text_embed
    original = torch.nn.Embedding.from_pretrained(model_state[TEXT_EMBED_KEY])
    assert torch.equal(embed(text + 1), original(text + 1))


def test_vocab_that_reorders_tokens_is_refused(trained):
    _, _, model_state, _ = trained
    reordered = [" ", "b", "a", "c", "d", "e", "f"]
    with pytest.raises(WeightsMismatch, match=r"token 2 is 'a' in the checkpoint but 'b'"):
        load_into(fresh_model(reordered), model_state, old_vocab=VOCAB, new_vocab=reordered)


def test_vocab_that_drops_tokens_is_refused(trained):
    _, _, model_state, _ = trained
    with pytest.raises(WeightsMismatch, match="the new vocabulary has 4 tokens, fewer than the checkpoint's 6"):
        load_into(fresh_model(VOCAB[:4]), model_state, old_vocab=VOCAB, new_vocab=VOCAB[:4])


def test_vocab_size_mismatch_without_vocabularies_is_refused(trained):
    _, _, model_state, _ = trained
    with pytest.raises(WeightsMismatch, match="file vocab of 6 tokens vs model vocab of 8"):
        load_into(fresh_model(VOCAB + ["x", "y"]), model_state, old_vocab=None, new_vocab=None)


def test_checkpoint_vocab_that_does_not_fit_its_embedding_is_refused(trained):
    _, _, model_state, _ = trained
    with pytest.raises(WeightsMismatch, match="vocab.txt has 4 tokens"):
        load_into(fresh_model(), model_state, old_vocab=VOCAB[:4], new_vocab=VOCAB)


def test_other_architecture_lists_missing_unexpected_and_shapes(trained):
    _, _, model_state, _ = trained
    deeper = copy.deepcopy(TINY)
    deeper.arch.depth = 3
    with pytest.raises(WeightsMismatch) as caught:
        load_into(fresh_model(model_config=deeper), model_state, old_vocab=None, new_vocab=None)
    assert caught.value.missing and all(key.startswith("transformer.transformer_blocks.2.") for key in caught.value.missing)
    assert caught.value.unexpected == []
    assert "missing (transformer.transformer_blocks.2." in str(caught.value)

    wider = copy.deepcopy(TINY)
    wider.arch.dim = 32
    with pytest.raises(WeightsMismatch, match=r"with another shape \(.*file \(.*\) vs model"):
        load_into(fresh_model(model_config=wider), model_state, old_vocab=None, new_vocab=None)


def test_failed_load_leaves_the_model_untouched(trained):
    _, _, model_state, _ = trained
    target = fresh_model()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    partial = dict(model_state)
    partial.pop("transformer.proj_out.weight")
    with pytest.raises(WeightsMismatch, match="1 missing"):
        load_into(target, partial, old_vocab=None, new_vocab=None)
    assert_same_tensors(target.state_dict(), before)


def test_half_precision_weights_are_cast_and_noted(trained):
    _, _, model_state, _ = trained
    half = {k: v.half() if v.is_floating_point() else v for k, v in model_state.items()}
    target = fresh_model()
    report = load_into(target, half, old_vocab=None, new_vocab=None)
    assert any(note.startswith("cast weights to the model's dtype (float16->float32") for note in report.notes)
    assert torch.equal(target.state_dict()[TEXT_EMBED_KEY], half[TEXT_EMBED_KEY].float())


# ---------------------------------------------------------------------------- converted-once cache


def test_adapt_cached_converts_once_and_reuses_by_content(trained, tmp_path, monkeypatch):
    model, ema, _, ema_state = trained
    source = tmp_path / "community_ptbr.pt"
    save_upstream_trainer_checkpoint(model, ema, source)
    write_vocab(VOCAB, tmp_path / "vocab.txt")
    monkeypatch.setenv("F5APP_CACHE_DIR", str(tmp_path / "cache"))

    converted = adapt_cached(source)
    assert converted.is_relative_to(tmp_path / "cache" / "adapted")
    read = CheckpointReader(converted).weights()
    assert_same_tensors(read.state, ema_state)
    assert read.notes == []  # already canonical
    assert read.vocab == VOCAB

    def must_not_convert_again(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(CheckpointReader, "weights", must_not_convert_again)
    copy_elsewhere = tmp_path / "elsewhere"
    copy_elsewhere.mkdir()
    (copy_elsewhere / "same.pt").write_bytes(source.read_bytes())
    (copy_elsewhere / "vocab.txt").write_bytes((tmp_path / "vocab.txt").read_bytes())
    assert adapt_cached(copy_elsewhere / "same.pt") == converted
    assert not list((tmp_path / "cache" / "adapted").glob(".tmp-*"))


def test_adapt_cached_keeps_ema_and_model_conversions_apart(trained, tmp_path):
    model, ema, model_state, ema_state = trained
    source = tmp_path / "model_last.pt"
    save_upstream_trainer_checkpoint(model, ema, source)
    from_ema = adapt_cached(source, use_ema=True, cache_dir=tmp_path / "c")
    from_model = adapt_cached(source, use_ema=False, cache_dir=tmp_path / "c")
    assert from_ema != from_model
    assert_same_tensors(CheckpointReader(from_model).weights().state, model_state)
    assert_same_tensors(CheckpointReader(from_ema).weights().state, ema_state)
