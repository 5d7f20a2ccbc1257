"""Pretrained weights come from the Hugging Face cache first, honour revision pins, and fail offline
with one line that says how to get the file. The cache is built here, laid out as huggingface_hub
lays it out: models--ORG--NAME/{blobs/<etag>, refs/<branch or tag>, snapshots/<commit>/<file> -> blob}."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from f5app.ckpt.hub import PretrainedUnavailable, fetch_pretrained, fetch_vocab

REPO = "SWivid/F5-TTS"
WEIGHTS = "F5TTS_v1_Base/model_1250000.safetensors"
VOCAB = "F5TTS_v1_Base/vocab.txt"
COMMIT_MAIN = "a" * 40
COMMIT_OLD = "0123456789abcdef0123456789abcdef01234567"


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> None:
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    for relative, content in files.items():
        blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        pointer = storage / "snapshots" / commit / relative
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    for ref in refs:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf_cache"
    add_snapshot(cache, REPO, COMMIT_MAIN, {WEIGHTS: b"weights at main", VOCAB: b" \na\n"}, refs=("main",))
    add_snapshot(cache, REPO, COMMIT_OLD, {WEIGHTS: b"weights at the old commit"}, refs=("v1.0",))
    return cache


def test_cached_file_is_found_for_the_main_branch(hub_cache):
    path = fetch_pretrained(REPO, WEIGHTS, cache_dir=str(hub_cache))
    assert path.read_bytes() == b"weights at main"
    assert COMMIT_MAIN in path.parts


def test_hf_hub_cache_environment_variable_is_honoured(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    assert fetch_pretrained(REPO, WEIGHTS).read_bytes() == b"weights at main"


@pytest.mark.parametrize("revision", [COMMIT_OLD, "v1.0"])
def test_revision_pin_selects_that_snapshot(hub_cache, revision):
    path = fetch_pretrained(REPO, WEIGHTS, revision=revision, cache_dir=str(hub_cache))
    assert path.read_bytes() == b"weights at the old commit"


def test_vocab_is_fetched_the_same_way(hub_cache):
    assert fetch_vocab(REPO, VOCAB, cache_dir=str(hub_cache)).read_text() == " \na\n"


def test_offline_and_not_cached_names_repo_file_revision_and_the_fix(hub_cache):
    with pytest.raises(PretrainedUnavailable) as caught:
        fetch_pretrained(REPO, "F5TTS_v1_Base/model_9999.safetensors", revision="v1.0", cache_dir=str(hub_cache))
    message = str(caught.value)
    assert "\n" not in message
    assert f"{REPO}/F5TTS_v1_Base/model_9999.safetensors (revision v1.0)" in message
    assert "HF_HUB_OFFLINE" in message
    assert f"hf download {REPO} F5TTS_v1_Base/model_9999.safetensors --revision v1.0 --cache-dir {hub_cache}" in message
    assert "ckpt=custom" in message


def test_offline_file_missing_from_a_pinned_revision_is_not_taken_from_another(hub_cache):
    with pytest.raises(PretrainedUnavailable, match=r"pretrained vocabulary .*revision v1.0"):
        fetch_vocab(REPO, VOCAB, revision="v1.0", cache_dir=str(hub_cache))


def test_unknown_repository_offline_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match=r"someone/else/x.safetensors \(revision main\) is not in the Hugging Face cache"):
        fetch_pretrained("someone/else", "x.safetensors", cache_dir=str(tmp_path / "empty"))
