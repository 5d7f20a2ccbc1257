"""Hostile and malformed files: each is one rejected candidate with a reason, never a crash, a
hang, a MemoryError or a touched file outside the run.

Every hostile file is built here, byte by byte where torch.save would never write it. The cases
that cost memory or time on a vulnerable reader run in a child process whose address space may
grow only a bounded amount past what its imports mapped (RLIMIT_AS; torch alone maps ~3 GiB at
import, so the limit is set after the imports) and that is killed after a timeout, so a
regression fails the test instead of hurting the machine.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from ckpt_factory import fake_cfm_state_dict, tiny_model_config, tiny_vocab

from f5app.ckpt.validate import validate

REPO = Path(__file__).resolve().parents[1]
MODEL, VOCAB = tiny_model_config(), tiny_vocab()


# --- running a risky call under limits ------------------------------------------------------------


def run_bounded(body: str, *, memory_mib: int = 512, timeout: float = 30, imports: str = "") -> dict:
    """Run ``body`` in a fresh interpreter allowed ``memory_mib`` more address space than its
    imports (``imports``, then validate) mapped; return the JSON object its last stdout line
    prints. A crash (SIGSEGV), a MemoryError, a traceback or the timeout fails the test."""
    script = "\n".join([
        "import json, resource, sys",
        imports,
        "from f5app.ckpt.validate import validate",
        "mapped = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:')) * 1024",
        f"resource.setrlimit(resource.RLIMIT_AS, (mapped + ({memory_mib} << 20),) * 2)",
        textwrap.dedent(body),
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert done.returncode == 0, f"child exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def validate_bounded(path: Path, **limits) -> dict:
    return run_bounded(
        f"r = validate({str(path)!r}, model=None, vocab_size=None, min_size_bytes=1)\n"
        "print(json.dumps({'ok': r.ok, 'reason': r.reason, 'incompatible': r.incompatible}))",
        **limits,
    )


def assert_damage(result, *fragments: str) -> None:
    """Rejected as damage (so resolution quarantines it and goes on) with a reason naming why."""
    ok, reason, incompatible = (result["ok"], result["reason"], result["incompatible"]) if isinstance(result, dict) else (
        result.ok, result.reason, result.incompatible)
    assert not ok and not incompatible, reason
    assert "\n" not in reason and all(f in reason for f in fragments), reason


# --- hostile torch files ----------------------------------------------------------------------------

PROTO2 = b"\x80\x02"


def torch_zip(path: Path, pickle_bytes: bytes, compress_type: int = zipfile.ZIP_STORED) -> Path:
    """A zip laid out like torch.save's (``archive/data.pkl``, version, byteorder) around ``pickle_bytes``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl"), pickle_bytes, compress_type=compress_type)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return path


def unicode(text: str) -> bytes:  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def torch_pickle_of(obj) -> bytes:
    """The data.pkl torch.save writes for ``obj``."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


@pytest.mark.parametrize("index", [0xFFFFFFFF, 0x4000000], ids=["64GiB", "1GiB"])
def test_a_memo_index_far_beyond_what_was_stored_is_refused_before_the_unpickler_sizes_its_memo(tmp_path, index):
    # {} stored at memo slot `index` (LONG_BINPUT): the C unpickler allocates 16 bytes per slot up to it
    path = torch_zip(tmp_path / "model.pt", PROTO2 + b"}r" + struct.pack("<I", index) + b".")
    assert_damage(validate_bounded(path, memory_mib=512), "memo index", str(index))


def test_a_deflate_bomb_data_pkl_is_refused_without_inflating_it(tmp_path):
    """1 KB on disk, 1 GiB inflated: refused from the zip directory alone."""
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = block.compress(bytes(1 << 24)) + block.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no back-references
    stream = segment * 64 + b"\x03\x00"  # 64 x 16 MiB of zeros, then an empty final block
    name, size, crc = b"archive/data.pkl", 64 << 24, 0
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    path = tmp_path / "model.pt"
    path.write_bytes(local + stream + central + end)
    assert path.stat().st_size < 1 << 20
    assert_damage(validate_bounded(path, memory_mib=256), "compressed")


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["deflate", "bzip2", "lzma"])
def test_a_compressed_data_pkl_is_refused_even_when_it_holds_a_valid_state_dict(tmp_path, method):
    """torch.save stores every entry uncompressed: a compressed one is foreign (or a bomb)."""
    pickle_bytes = torch_pickle_of({"model_state_dict": fake_cfm_state_dict(MODEL, len(VOCAB))})
    path = torch_zip(tmp_path / "model.pt", pickle_bytes, compress_type=method)
    assert_damage(validate(path, model=None, vocab_size=None, min_size_bytes=1), "compressed zip entry")


@pytest.mark.parametrize(
    "pickle_bytes",
    [
        # {(((...),),): 1}: hashing the 10^6-deep key recursed in C until SIGSEGV
        PROTO2 + b"})" + b"\x85" * 10**6 + b"K\x01s.",
        # a persistent id nested 10^6 deep: repr of it for the error message, RecursionError
        PROTO2 + b")" + b"\x85" * 10**6 + b"Q.",
    ],
    ids=["dict-key", "persistent-id"],
)
def test_objects_nested_a_million_deep_are_refused_before_any_unpickler_runs(tmp_path, pickle_bytes):
    path = torch_zip(tmp_path / "model.pt", pickle_bytes)
    assert_damage(validate_bounded(path, memory_mib=512), "nested more than")


def test_the_cli_validates_a_deeply_nested_file_with_one_line_and_status_1(tmp_path):
    path = torch_zip(tmp_path / "model.pt", PROTO2 + b"})" + b"\x85" * 10**6 + b"K\x01s.")
    outcome = run_bounded(
        "import contextlib, io\n"
        "from f5app.ckpt_cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    status = main(['validate', {str(path)!r}])\n"
        "print(json.dumps({'status': status, 'out': out.getvalue()}))"
    )
    assert outcome["status"] == 1 and outcome["out"].count("\n") == 1 and "nested more than" in outcome["out"]


def pax_header(n: int, prefix: bytes) -> bytes:
    """A valid ustar block (``prefix`` at the start of its name) announcing an ``n``-byte pax header
    of digits: Python's tarfile searches it with a regex that is quadratic in ``n``."""
    block = bytearray(512)
    block[: len(prefix)] = prefix
    block[100:136] = b"0000644\0" + b"0000000\0" + b"0000000\0" + b"%011o\0" % n
    block[136:148] = b"00000000000\0"
    block[156:157], block[257:265] = b"x", b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    body = b"1" * n
    return bytes(block) + body + bytes(-len(body) % 512) + bytes(1024)


LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


@pytest.mark.parametrize("prefix, reason", [(b"\x80", "not a PyTorch checkpoint"), (LEGACY_MAGIC, "tar archive")],
                         ids=["0x80", "exact-legacy-magic"])
def test_a_tar_header_in_a_pt_file_never_reaches_torchs_tar_loader(tmp_path, prefix, reason):
    """98 KB took 20 s in tarfile's pax parsing (quadratic) before the legacy loader gave up."""
    path = tmp_path / "model.pt"
    path.write_bytes(pax_header(98_000, prefix))
    # torch imported up front: a vulnerable validate spends the timeout in tarfile, not importing torch
    assert_damage(validate_bounded(path, timeout=10, imports="import torch"), reason)


@pytest.mark.parametrize("protocol", range(6))
def test_the_opcode_scan_accepts_what_pythons_own_pickler_writes(protocol):
    """The scan refuses hostile pickles only: every protocol, empty MARK slices, shared and
    self-referencing objects, long batches (SETITEMS / APPENDS of 1000)."""
    import collections
    import pickle

    from f5app.safe_load import scan_pickle

    shared = [1, 2]
    looped: list = []
    looped.append(looped)
    value = {
        "empty": ((), [], {}, set(), frozenset(), b"", ""), "scalars": (0, -1, 2**70, 1.5, None, True, "é", b"\xff"),
        "shared": (shared, shared), "looped": looped, "ordered": collections.OrderedDict(a=1),
        "batches": (list(range(2500)), {i: str(i) for i in range(2500)}), "nested": [[[[()]]]] * 3,
    }
    data = pickle.dumps(value, protocol=protocol)
    assert scan_pickle(data) == len(data)


def test_a_non_zip_file_must_start_with_torchs_legacy_magic(tmp_path):
    assert LEGACY_MAGIC == __import__("pickle").dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
    forged = tmp_path / "forged.pt"
    forged.write_bytes(b"\x80\x02" + bytes(4094))  # a pickle protocol byte, then nothing torch wrote
    assert_damage(validate(forged, model=None, vocab_size=None, min_size_bytes=1), "not a PyTorch checkpoint")
    genuine = tmp_path / "legacy.pt"
    torch.save({"model_state_dict": fake_cfm_state_dict(MODEL, len(VOCAB))}, genuine, _use_new_zipfile_serialization=False)
    assert validate(genuine, model=MODEL, vocab_size=len(VOCAB)).ok


# --- hostile safetensors ------------------------------------------------------------------------------


def test_a_39_mb_safetensors_header_is_refused_unparsed(tmp_path):
    """Empty objects cost ~25x their bytes in json.loads: this header took ~1 GiB to parse."""
    path = tmp_path / "model.safetensors"
    header = b'{"__metadata__":{},"x":[' + b"{}," * (13 << 20) + b"{}]}"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert_damage(validate_bounded(path, memory_mib=512), "header", "MiB")


# --- unexpected exceptions from what a file holds ------------------------------------------------------


def rebuild_call(size: bytes) -> bytes:
    """``{"model_state_dict": {"w": torch._utils._rebuild_tensor_v2("s", 0, SIZE, (1,), False)}}``."""
    return (PROTO2 + b"}" + unicode("model_state_dict") + b"}" + unicode("w")
            + b"ctorch._utils\n_rebuild_tensor_v2\n(" + unicode("s") + b"K\x00" + size + b"K\x01\x85\x89tRss.")


@pytest.mark.parametrize(
    "pickle_bytes",
    [
        rebuild_call(b"G\x7f\xf0\x00\x00\x00\x00\x00\x00\x85"),  # size (inf,): OverflowError in the fast reader
        PROTO2 + b"}" + unicode("model_state_dict") + b"}" + unicode("w")
        + b"ctorch._utils\n_rebuild_tensor_v2\n)Rss.",  # no arguments: TypeError inside torch's loader
    ],
    ids=["overflow", "type-error"],
)
def test_unexpected_exceptions_while_reading_a_pt_file_are_one_rejected_candidate(tmp_path, pickle_bytes):
    path = torch_zip(tmp_path / "model.pt", pickle_bytes)
    assert_damage(validate(path, model=MODEL, vocab_size=len(VOCAB), min_size_bytes=1), "model.pt")


def test_a_state_dict_with_non_string_keys_is_a_rejected_candidate(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model_state_dict": {1: torch.zeros(1), (2, 3): torch.zeros(2)}}, path)
    assert_damage(validate(path, model=MODEL, vocab_size=len(VOCAB), min_size_bytes=1), "missing keys")


def rewrite_header(path: Path, edit) -> Path:
    """Replace a safetensors file's JSON header by ``edit(header)`` (a dict, or raw bytes), data kept."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = edit(json.loads(raw[8 : 8 + length]))
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length :])
    return path


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda h: b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),  # RecursionError in json
        (lambda h: {**h, "x": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]}}, "'x'"),  # inf: OverflowError
        (lambda h: {**h, "x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 4]}}, "'x'"),  # 3 floats in 4 bytes
        (lambda h: {**h, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, True]}}, "'x'"),
        (lambda h: {**h, "__metadata__": {"format": ["pt"]}}, "__metadata__"),
        # a 5,000-digit block number: int() refuses it (ValueError) deep inside the architecture check
        (lambda h: {**h, "transformer.transformer_blocks." + "9" * 5000 + ".attn.to_q.weight":
                    {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}, "damaged structure"),
    ],
    ids=["recursion", "overflow", "span", "bool-offset", "metadata", "huge-index"],
)
def test_a_safetensors_header_that_is_json_of_the_wrong_shape_is_a_rejected_candidate(tmp_path, edit, fragment):
    from ckpt_factory import make_safetensors

    path = rewrite_header(make_safetensors(tmp_path / "model.safetensors", MODEL, len(VOCAB)), edit)
    assert_damage(validate(path, model=MODEL, vocab_size=len(VOCAB), min_size_bytes=1), fragment)


# --- reference audio at an odd rate -------------------------------------------------------------------


def test_a_reference_at_44101_hz_resamples_without_a_4_gb_kernel(tmp_path):
    """gcd(44101, 24000) = 1 made torchaudio build a 24000 x 44125 kernel (4.2 GB)."""
    import numpy as np
    import soundfile as sf

    path = tmp_path / "odd.wav"
    seconds = np.arange(44101) / 44101
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32), 44101)
    outcome = run_bounded(
        "import numpy as np\n"
        "from f5app.audio.io import read_audio\n"
        f"wav, sr = read_audio({str(path)!r}, target_sr=24000)\n"
        "peak = float(np.argmax(np.abs(np.fft.rfft(wav))) * sr / len(wav))\n"
        "print(json.dumps({'sr': sr, 'n': len(wav), 'peak_hz': peak}))",
        memory_mib=1024, imports="import torch, torchaudio.functional",
    )
    assert outcome["sr"] == 24000 and abs(outcome["n"] - 24000) <= 1
    assert abs(outcome["peak_hz"] - 440) <= 1  # same pitch: the ratio is right to far better than a cent


# --- the run lock ----------------------------------------------------------------------------------


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    from f5app.training.lock import RunLock, RunLockedError

    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(precious)
    with pytest.raises(RunLockedError, match="symbolic link"):
        RunLock(run_dir).acquire()
    assert precious.read_text() == "years of work\n"


@pytest.mark.parametrize("kind", ["fifo", "directory", "hard link"])
def test_a_lock_file_that_is_not_a_plain_file_of_its_own_is_refused(tmp_path, kind):
    from f5app.training.lock import RunLock, RunLockedError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / ".lock"
    other = tmp_path / "other.txt"
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "directory":
        lock.mkdir()
    else:
        other.write_text("someone else's\n")
        os.link(other, lock)
    with pytest.raises(RunLockedError, match="plain file"):
        RunLock(run_dir).acquire()
    if kind == "hard link":
        assert other.read_text() == "someone else's\n"


# --- file systems without flock --------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_file_system_without_flock_is_one_clear_line_and_leaks_no_descriptor(tmp_path, monkeypatch):
    import errno

    from f5app.training import lock as lock_module

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    before = open_fds()
    with pytest.raises(lock_module.RunLockedError) as refused:
        lock_module.RunLock(tmp_path / "run").acquire()
    assert open_fds() == before
    message = str(refused.value)
    assert "\n" not in message and "no file locks" in message and "docs/scale.md" in message


# --- ckpt prune and the run lock ---------------------------------------------------------------------


def test_prune_refuses_while_a_trainer_holds_the_run_lock_and_deletes_nothing(tmp_path, capsys):
    import fcntl

    from ckpt_factory import make_f5app_checkpoint

    from f5app.ckpt_cli import main as ckpt_main
    from f5app.training.lock import RunLock

    run_dir = tmp_path / "run"
    for update in (10, 20, 30):
        make_f5app_checkpoint(run_dir / "checkpoints", update, MODEL, VOCAB, val_loss=1.0 / update)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    trainer = RunLock(run_dir).acquire()  # flock conflicts between two open files even in one process
    try:
        status = ckpt_main(["prune", str(run_dir), "--keep-last", "1"])
    finally:
        trainer.release()
    assert status == 2
    assert "is being trained by" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    assert ckpt_main(["prune", str(run_dir), "--keep-last", "1"]) == 0  # and prunes once the trainer is gone
    assert len([p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("update_")]) < 3
    fd = os.open(run_dir / ".lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # prune let go of the lock
    finally:
        os.close(fd)


# --- sampling numbers at the Synthesizer's edge -----------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=1180591620717411303424", "seed"),  # 2**70: torch.manual_seed overflowed
        ("speed=1e-9", "speed"),  # a 10^12-frame duration
        ("speed=nan", "speed"),
        ("nfe_step=1000000000", "nfe_step"),
        ("cross_fade=inf", "cross_fade"),
        ("max_ref_seconds=0", "max_ref_seconds"),
        ("target_rms=-1", "target_rms"),
    ],
)
def test_out_of_range_sampling_numbers_are_one_line_naming_the_key_and_range(compose_cfg, tmp_path, override, key):
    from f5app.config import InferConfig, to_settings
    from f5app.inference.errors import InferenceInputError
    from f5app.inference.synthesizer import Synthesizer

    cfg = to_settings(compose_cfg("infer", [override, f"output_root={tmp_path}"]), InferConfig)
    with pytest.raises(InferenceInputError) as refused:
        Synthesizer.from_config(cfg, run_dir=tmp_path / "no-run")  # refused before any checkpoint is looked for
    message = str(refused.value)
    assert message.startswith(f"{key}=") and "out of range: use" in message and "\n" not in message
