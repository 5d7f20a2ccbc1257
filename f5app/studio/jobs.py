"""Long work the pages start: child processes (training, comparisons, preparation) and exports.

Each child runs the command a user would type, as an argument list (never through a shell), with
its output in a log file under ``output_root/studio/jobs``; the page shows the command and the
log's tail. Training runs at once, one at a time per studio. Other work waits in one bounded queue
and runs one job at a time, as the server's requests wait for its model: a full queue is refused
(429). Any job can be cancelled: a queued one is dropped, a running child gets SIGTERM (training
then saves a checkpoint and exits 3).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from f5app.errors import UserError

log = logging.getLogger(__name__)

#: f5app.train's exit status after SIGTERM (f5app/training/signals.py): saved, stopped, resumable.
STOPPED_EXIT = 3


class JobRefused(UserError):
    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    id: str
    kind: str  # train | compare | prepare | export
    title: str
    command: str  # as a user would type it ("" for in-process work)
    log_path: Path
    argv: list[str] = field(default_factory=list)
    call: Optional[Callable[[], Any]] = None  # in-process work instead of a child process
    before: Optional[Callable[[], None]] = None  # in-process work before the child starts (e.g. its prompt list)
    run_dir: Optional[Path] = None
    progress: Optional[Callable[[], Optional[dict]]] = None
    result: Any = None
    state: str = "queued"  # queued | running | finished | stopped | failed | cancelled
    returncode: Optional[int] = None
    error: Optional[str] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    ended: Optional[float] = None
    process: Optional[subprocess.Popen] = None
    cancel_requested: bool = False

    def to_dict(self, tail_lines: int = 40) -> dict[str, Any]:
        try:
            progress = self.progress() if self.progress is not None and self.state in ("running", "finished", "stopped") else None
        except (OSError, ValueError):
            progress = None
        return {
            "id": self.id, "kind": self.kind, "title": self.title, "command": self.command, "state": self.state,
            "returncode": self.returncode, "error": self.error, "created": self.created, "started": self.started,
            "ended": self.ended, "pid": self.process.pid if self.process is not None else None,
            "run_dir": str(self.run_dir) if self.run_dir else None, "progress": progress,
            "result": self.result if isinstance(self.result, (dict, str, type(None))) else str(self.result),
            "log_tail": tail(self.log_path, tail_lines),
        }


def tail(path: Path, lines: int, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of a log, for a person to read (never parsed)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line[-400:] for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:]


class JobRunner:
    def __init__(self, log_dir: Path, max_queued: int = 8, env: Optional[dict[str, str]] = None):
        self.log_dir = Path(log_dir)
        self.max_queued = max_queued
        self.env = env
        self._jobs: dict[str, Job] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._ids = itertools.count(1)
        self._stamp = time.strftime("%Y%m%d-%H%M%S")
        self._worker = threading.Thread(target=self._work, name="f5app-studio-jobs", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ starting
    def _new(self, kind: str, title: str, **fields: Any) -> Job:
        job_id = f"{self._stamp}-{next(self._ids)}-{kind}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return Job(job_id, kind, title, log_path=self.log_dir / f"{job_id}.log", **fields)

    def start_training(self, title: str, argv: list[str], command: str, run_dir: Path,
                       progress: Callable[[], Optional[dict]], locked_by: Callable[[Path], Optional[str]]) -> Job:
        """Start ``f5app.train`` now; refused while this studio trains, or while another process holds the run."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.kind == "train" and j.state in ("queued", "running")), None)
            if busy is not None:
                raise JobRefused(f"this studio is already training ({busy.title}); stop it first")
            holder = locked_by(run_dir)
            if holder is not None:
                raise JobRefused(f"run {run_dir.name} is being trained by {holder}; it is not started twice")
            job = self._new("train", title, argv=argv, command=command, run_dir=run_dir, progress=progress)
            self._jobs[job.id] = job
            self._spawn(job)
        threading.Thread(target=self._wait, args=(job,), name=f"f5app-studio-{job.id}", daemon=True).start()
        return job

    def submit(self, kind: str, title: str, *, argv: Optional[list[str]] = None, command: str = "",
               call: Optional[Callable[[], Any]] = None, progress: Optional[Callable[[], Optional[dict]]] = None,
               result: Any = None, before: Optional[Callable[[], None]] = None) -> Job:
        """Queue a child process (``argv``) or in-process work (``call``); refused (429) when the queue is full."""
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.kind != "train" and j.state == "queued")
            if waiting >= self.max_queued:
                raise JobRefused(f"{waiting} jobs are waiting already (studio max_jobs={self.max_queued}); try again when one is done", 429)
            job = self._new(kind, title, argv=argv or [], command=command, call=call, progress=progress, result=result, before=before)
            self._jobs[job.id] = job
        self._queue.put(job)
        return job

    # ------------------------------------------------------------------ looking and stopping
    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobRefused(f"no job {job_id!r}", 404)
        return job

    def list(self) -> list[Job]:
        return list(reversed(self._jobs.values()))

    def training(self) -> Optional[Job]:
        return next((j for j in reversed(self._jobs.values()) if j.kind == "train" and j.state == "running"), None)

    def cancel(self, job_id: str) -> Job:
        """Drop a queued job; send SIGTERM to a running child (training saves, then exits 3)."""
        job = self.get(job_id)
        with self._lock:
            if job.state == "queued":
                job.state, job.ended = "cancelled", time.time()
                return job
            if job.state != "running":
                raise JobRefused(f"job {job_id} has already ended ({job.state})")
            if job.process is None:
                raise JobRefused(f"job {job_id} runs inside the studio and cannot be interrupted; it ends by itself")
            job.cancel_requested = True
            try:
                job.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        return job

    def close(self, timeout: float = 60.0) -> None:
        """Stop every child (SIGTERM, then wait): a studio that stops leaves no training behind."""
        self._queue.put(None)
        for job in list(self._jobs.values()):
            if job.state == "queued":
                job.state = "cancelled"
            if job.state == "running" and job.process is not None and job.process.poll() is None:
                job.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for job in list(self._jobs.values()):
            if job.process is not None and job.process.poll() is None:
                try:
                    job.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    job.process.kill()

    # ------------------------------------------------------------------ running
    def _spawn(self, job: Job) -> None:
        with open(job.log_path, "ab") as log_file:
            log_file.write(f"$ {job.command}\n".encode())
            log_file.flush()
            job.process = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                           env=self.env, close_fds=True)
        job.state, job.started = "running", time.time()
        log.info("job %s started (pid %d): %s", job.id, job.process.pid, job.command)

    def _wait(self, job: Job) -> None:
        assert job.process is not None
        code = job.process.wait()
        job.returncode, job.ended = code, time.time()
        if code == 0:
            job.state = "finished"
        elif job.kind == "train" and code == STOPPED_EXIT:
            job.state = "stopped"
        elif job.cancel_requested:
            job.state = "cancelled"
        else:
            job.state, job.error = "failed", f"exited with status {code}; see the log"
        log.info("job %s %s (status %d)", job.id, job.state, code)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.state != "queued":
                continue
            if job.call is not None:
                job.state, job.started = "running", time.time()
                try:
                    outcome = job.call()
                    job.result = outcome if outcome is not None else job.result
                    job.state = "finished"
                except Exception as error:  # one job's failure is shown on its card; the queue goes on
                    job.state, job.error = "failed", (str(error).splitlines() or [type(error).__name__])[0]
                    log.warning("job %s failed: %s", job.id, job.error)
                job.ended = time.time()
                continue
            try:
                if job.before is not None:
                    job.before()
                self._spawn(job)
            except UserError as error:
                job.state, job.error, job.ended = "failed", str(error), time.time()
                continue
            except OSError as error:
                job.state, job.error, job.ended = "failed", f"could not start: {error.strerror or error}", time.time()
                continue
            self._wait(job)
