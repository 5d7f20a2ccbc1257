"""Pretrained weights come from the Hugging Face cache first, honour revision pins, and fail offline
with one line that says how to get the file. The cache is built here, laid out as huggingface_hub
lays it out: models--ORG--NAME/{blobs/<etag>, refs/<branch or tag>, snapshots/<commit>/<file> -> blob}."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from f5app.hub import PretrainedUnavailable, fetch_pretrained, fetch_vocab

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


# ---------------------------------------------------------------------------- names that are not names


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision", "setting"),
    [
        ("bad..repo", WEIGHTS, None, "ckpt.repo_id='bad..repo'"),
        ("org/name/extra", WEIGHTS, None, "ckpt.repo_id='org/name/extra'"),
        ("", WEIGHTS, None, "ckpt.repo_id=''"),
        (None, WEIGHTS, None, "ckpt.repo_id=None"),
        (REPO, "../x", None, "ckpt.filename='../x'"),
        (REPO, "F5TTS_v1_Base/../../../x", None, "ckpt.filename="),
        (REPO, "/etc/passwd", None, "ckpt.filename='/etc/passwd'"),
        (REPO, "C:\\x.pt", None, "ckpt.filename="),
        (REPO, "", None, "ckpt.filename=''"),
        (REPO, WEIGHTS, "../../refs/main", "ckpt.revision='../../refs/main'"),
    ],
)
def test_a_name_that_is_not_a_hub_name_is_one_line_naming_the_setting(hub_cache, repo_id, filename, revision, setting):
    with pytest.raises(PretrainedUnavailable) as caught:
        fetch_pretrained(repo_id, filename, revision=revision, cache_dir=str(hub_cache))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(setting)


def test_a_refused_name_touches_nothing_outside_the_cache(hub_cache, tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"not from the hub")
    relative = os.path.relpath(outside, hub_cache / "models--SWivid--F5-TTS" / "snapshots" / COMMIT_MAIN)
    with pytest.raises(PretrainedUnavailable, match="without '..' segments"):
        fetch_pretrained(REPO, relative, cache_dir=str(hub_cache))


def test_a_vocab_name_names_its_own_setting(hub_cache):
    with pytest.raises(PretrainedUnavailable, match=r"^ckpt.vocab_filename='\.\./vocab.txt'"):
        fetch_vocab(REPO, "../vocab.txt", cache_dir=str(hub_cache))


def test_hub_failures_are_user_errors():
    from f5app.errors import UserError

    assert issubclass(PretrainedUnavailable, UserError)


@pytest.mark.parametrize("revision", ["v1.0", "refs/pr/1", COMMIT_OLD])
def test_ordinary_revisions_pass_the_name_check_and_select_their_snapshot(hub_cache, revision):
    pr_ref = hub_cache / "models--SWivid--F5-TTS" / "refs" / "refs" / "pr" / "1"  # where huggingface_hub keeps a PR's commit
    pr_ref.parent.mkdir(parents=True)
    pr_ref.write_text(COMMIT_OLD)
    path = fetch_pretrained(REPO, WEIGHTS, revision=revision, cache_dir=str(hub_cache))
    assert path.read_bytes() == b"weights at the old commit" and COMMIT_OLD in path.parts


@pytest.mark.parametrize("override", ["ckpt.repo_id=bad..repo", "ckpt.filename=../x"])
def test_resolve_with_a_bad_hub_name_is_one_line_and_exit_1(override, tmp_path, monkeypatch, capsys):
    from f5app.ckpt_cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = main(["resolve", "--for", "infer", "ckpt=pretrained", override, f"output_root={tmp_path}", f"ckpt.cache_dir={tmp_path}"])
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert status == 1 and len(errors) == 1 and override.split("=")[0] + "=" in errors[0]
