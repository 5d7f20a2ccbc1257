"""Two "nodes" on this machine: the multi-node path of ``accelerate launch`` (``--num_machines 2
--machine_rank 0|1 --main_process_ip 127.0.0.1``, gloo), one process per node, as docs/scale.md shows it.

Node 1 is given a run folder of its own, so anything it wrote would be seen there; on a cluster
both nodes name the same folder on a shared file system.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import free_port, make_voice_folder, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"))


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def start_node(rank: int, port: int, run_dir: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
               "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "f5app.train", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(command, env=env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def two_nodes(tmp_path: Path, run_dir: Path, overrides: list[str], stop_node: int | None = None) -> tuple[list[int], str, str]:
    """Both nodes to the end (or, with ``stop_node``, until SIGTERM to that node's launcher); their exit statuses and logs."""
    port, logs = free_port(), [tmp_path / "node0.log", tmp_path / "node1.log"]
    nodes = [start_node(0, port, run_dir, overrides, logs[0]), start_node(1, port, tmp_path / "node1", overrides, logs[1])]
    try:
        if stop_node is not None:
            wait_for(lambda: "training clips" in logs[0].read_text(), timeout=300)
            time.sleep(3)  # a few updates
            nodes[stop_node].send_signal(signal.SIGTERM)  # what SLURM sends the job step on preemption
        statuses = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    return statuses, logs[0].read_text(), logs[1].read_text()


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(p for p in folder.iterdir() if p.name.startswith("update_") and (p / "metadata.json").exists()) if folder.exists() else []


def position(checkpoint: Path) -> dict:
    """Where a checkpoint is in the data. The tests' data make 2 frame batches of all 6 training clips per
    epoch, so ``epochs_done`` (the epoch plus the share of its 2 batches consumed) tells the samples seen."""
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    return {"update": state["update"], "epochs_done": state["epoch"] + state["batch_in_epoch"] / 2,
            "samples_seen": state["samples_seen"], "world_size": state["world_size"]}


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def test_two_nodes_write_one_set_of_checkpoints_from_global_rank_0_with_every_ranks_rng(voice, tmp_path):
    run_dir = tmp_path / "run"
    statuses, log0, log1 = two_nodes(tmp_path, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 2}))
    assert statuses == [0, 0], log0[-3000:] + log1[-3000:]
    assert [p.name for p in checkpoints(run_dir)] == ["update_00000002", "update_00000004"]
    for checkpoint in checkpoints(run_dir):
        assert json.loads((checkpoint / "metadata.json").read_text())["world_size"] == 2
        rngs = [torch.load(checkpoint / f"rng_state_{rank}.pt", weights_only=True)["torch"] for rank in (0, 1)]
        assert not torch.equal(*rngs)  # each rank's own stream, not rank 0's twice
    # node 1's folder holds only Hydra's record of its config and its log: no checkpoint, run status or lock
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == [".hydra", "train.log"]


def test_sigterm_on_one_node_saves_once_and_stops_both_then_resumes_on_one_node_and_on_two_from_the_same_samples(voice, tmp_path):
    run_dir = tmp_path / "run"
    forever = tiny_overrides(voice, **{"trainer.max_updates": 100000, "trainer.save_every": 1000, "trainer.val_every": 1000})
    statuses, log0, log1 = two_nodes(tmp_path, run_dir, forever, stop_node=1)
    assert statuses[0] != 0 and statuses[1] != 0, log0[-3000:]  # both exited (launchers report their ranks' status 3 as 1)
    assert "stopped by SIGTERM" in log1 and "stopped by a signal on another process" in log0
    [stopped] = checkpoints(run_dir)
    assert (stopped / "rng_state_0.pt").exists() and (stopped / "rng_state_1.pt").exists()
    at_stop = position(stopped)
    assert json.loads((run_dir / "preempted.json").read_text())["update"] == at_stop["update"] > 0
    # with 2 processes an update takes both batches of an epoch
    assert "6 training clips, 2 validation clips, 2 batches per epoch" in log0
    assert at_stop["epochs_done"] == at_stop["update"] and at_stop["samples_seen"] == 6 * at_stop["epochs_done"]

    # one node, one process: the next 2 updates take the next 2 batches, one epoch
    u = at_stop["update"]
    one = subprocess.run([sys.executable, "-m", "f5app.train", *tiny_overrides(voice, **{"trainer.max_updates": u + 2}), f"hydra.run.dir={run_dir}"],
                         env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert one.returncode == 0, one.stdout[-3000:]
    assert f"resuming a 2-process run with 1 processes: the data continues from {at_stop['samples_seen']} samples seen" in one.stdout
    after_one = position(checkpoints(run_dir)[-1])
    assert after_one == {"update": u + 2, "epochs_done": at_stop["epochs_done"] + 1, "samples_seen": at_stop["samples_seen"] + 6, "world_size": 1}

    # two nodes again: each of 2 more updates is a whole epoch again
    statuses, log0, log1 = two_nodes(tmp_path, run_dir, tiny_overrides(voice, **{"trainer.max_updates": u + 4}))
    assert statuses == [0, 0], log0[-3000:] + log1[-3000:]
    assert re.search(rf"resumed at update {u + 2} \(epoch \d+, {after_one['samples_seen']} samples seen\)", log0)
    final = position(checkpoints(run_dir)[-1])
    assert final == {"update": u + 4, "epochs_done": after_one["epochs_done"] + 2, "samples_seen": after_one["samples_seen"] + 12, "world_size": 2}
    assert not (run_dir / "preempted.json").exists()
