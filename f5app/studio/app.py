"""The studio's HTTP side: JSON endpoints under ``/api`` and the pages at ``/``.

``create_app(settings, api_key)`` builds it; ``f5app/studio/__main__.py`` serves it with uvicorn.
The speech server's guard (f5app/serving/guard.py: Host 421 without a key, foreign Origin 403,
JSON bodies only 415) and its body limit stand in front of every route. With a key, every
``/api`` call must carry ``Authorization: Bearer <key>`` (the page asks for it once).
"""

from __future__ import annotations

import hmac
import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from f5app.ckpt import layout
from f5app.ckpt.export import adapter_record, export_adapter, export_merged, export_weights
from f5app.ckpt.schema import read_metadata
from f5app.config import StudioConfig
from f5app.data.recordings.pipeline import DEFAULT_WORK_DIR
from f5app.data.recordings.report import REVIEW_JSON
from f5app.errors import UserError
from f5app.run_state import LOCK_FILENAME, lock_holder, read_run_status
from f5app.serving.app import with_limits
from f5app.serving.guard import GuardPolicy, install_guard
from f5app.studio import compare, forms, review, state
from f5app.studio.jobs import JobRefused, JobRunner
from f5app.studio.roots import PathRefused, Roots

log = logging.getLogger(__name__)

PAGES_DIR = Path(__file__).resolve().parent / "pages"
#: Files a page may fetch from the roots: audio to play, pictures to show.
SERVED_SUFFIXES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".png": "image/png"}


class Studio:
    """What the endpoints share: the roots, the job runner, the settings."""
    def __init__(self, settings: StudioConfig, env: Optional[dict[str, str]] = None):
        self.settings = settings
        self.roots = Roots.of(settings.output_root, settings.data_roots)
        self.jobs = JobRunner(self.roots.studio / "jobs", max_queued=settings.max_jobs, env=env)

    # ------------------------------------------------------------------ runs and checkpoints
    def run_dir(self, name: str, sweep: Optional[str]) -> Path:
        folder = self.roots.run_dir(name, sweep=sweep)
        if not folder.is_dir():
            raise JobRefused(f"no run {name!r}", 404)
        return folder

    def commands(self, checkpoint: Path) -> dict[str, str]:
        """The exact f5app.serve / f5app.infer commands for a checkpoint folder or an exported file."""

        model = self._model_name(checkpoint)
        args = [f"output_root={self.roots.output_root}", "ckpt=custom", f"ckpt.path={checkpoint}"] + ([f"model={model}"] if model else [])
        return {
            "serve": shlex.join(["python", "-m", "f5app.serve", *args]),
            "infer": shlex.join(["python", "-m", "f5app.infer", *args, "text=Hello from my new voice."]),
        }

    @staticmethod
    def _model_name(path: Path) -> Optional[str]:
        metadata = read_metadata(path) if path.is_dir() else None
        name = (metadata.model or {}).get("name") if metadata is not None else None
        return name if name in forms.BY_KEY["model"].choices else None

    def pin(self, body: dict[str, Any]) -> dict[str, Any]:
        folder = compare.checkpoint_folder(self.roots, body.get("checkpoint", ""))
        metadata = read_metadata(folder)
        assert metadata is not None  # checkpoint_folder checked it is complete
        pointer = layout.write_pointer(folder.parent, "pinned", folder.name, metadata.update, metadata.metrics.val_loss)
        return {"pinned": pointer.name, "run_dir": str(folder.parent.parent)}

    # ------------------------------------------------------------------ jobs
    def start_compare(self, body: dict[str, Any]) -> dict[str, Any]:
        out = self.roots.studio / "compare" / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6:06d}"
        planned = compare.plan(self.roots, body, out)
        argv, command = forms.command("f5app.eval", planned["overrides"], self.roots.output_root)
        def write_prompts() -> None:
            compare.write_text_prompts(planned["folders"][0], planned["text"], planned["num_prompts"], planned["seed"], out)

        before = write_prompts if planned["text"] is not None else None
        expected = len(planned["folders"]) * planned["num_prompts"]
        job = self.jobs.submit("compare", f"compare {len(planned['folders'])} checkpoints", argv=argv, command=command,
                               progress=lambda: compare.progress(out, expected), before=before,
                               result={"out_dir": str(out), "checkpoints": [str(f) for f in planned["folders"]]})
        return self.job_dict(job)

    def job_dict(self, job) -> dict[str, Any]:  # noqa: ANN001 (Job)
        data = job.to_dict(self.settings.log_tail_lines)
        if job.kind == "compare" and job.state == "finished" and isinstance(job.result, dict):
            data["comparison"] = compare.results(Path(job.result["out_dir"]), [Path(p) for p in job.result["checkpoints"]])
        return data

    def start_training(self, overrides: list[str], run_name: str) -> dict[str, Any]:
        run_dir = self.roots.run_dir(run_name)
        argv, command = forms.command("f5app.train", overrides, self.roots.output_root)

        def progress() -> Optional[dict]:
            status = read_run_status(run_dir)
            return None if status is None else {"done": status.update, "total": status.max_updates, "unit": "updates", "state": status.state}

        job = self.jobs.start_training(f"train {run_name}", argv, command, run_dir, progress,
                                       locked_by=lambda folder: lock_holder(folder / LOCK_FILENAME))
        return self.job_dict(job)

    def resume(self, body: dict[str, Any]) -> dict[str, Any]:
        run_dir = self.run_dir(body.get("run", ""), None)
        holder = lock_holder(run_dir / LOCK_FILENAME)
        if holder is not None:
            raise JobRefused(f"run {run_dir.name} is being trained by {holder}; it is not started twice")
        recorded = forms.recorded_overrides(run_dir)
        if recorded is None:
            raise UserError(f"run {run_dir.name} has no checkpoint yet; start it from the form")
        overrides = forms.checked_overrides(recorded, self.roots)
        extra = body.get("values") or {}
        if extra:  # e.g. a higher trainer.max_updates to extend a finished run
            if set(extra) - {"trainer.max_updates"}:
                raise UserError("resuming takes only trainer.max_updates; other settings stay as the run recorded them")
            overrides = [o for o in overrides if not o.startswith("trainer.max_updates=")]
            overrides.append(f"trainer.max_updates={forms.BY_KEY['trainer.max_updates'].check(extra['trainer.max_updates'], self.roots)}")
        if not any(o.startswith("run_name=") for o in overrides):
            overrides.insert(0, f"run_name={run_dir.name}")
        return self.start_training(overrides, run_dir.name)

    def export(self, body: dict[str, Any]) -> dict[str, Any]:

        folder = compare.checkpoint_folder(self.roots, body.get("checkpoint", ""))
        mode = body.get("mode", "weights")
        is_adapter = adapter_record(folder) is not None
        if mode not in ("weights", "merged", "adapter"):
            raise UserError("mode must be weights, merged or adapter")
        if is_adapter and mode == "weights":
            mode = "merged"
        if not is_adapter and mode != "weights":
            raise UserError(f"{folder.name} holds full weights; export it as weights (merged and adapter are for LoRA checkpoints)")
        run = folder.parent.parent.name
        suffix = {"weights": ".safetensors", "merged": "-merged.safetensors", "adapter": "-adapter"}[mode]
        out = self.roots.studio / "exports" / f"{run}-{folder.name}{suffix}"

        def work() -> dict[str, Any]:

            out.parent.mkdir(parents=True, exist_ok=True)
            if mode == "merged":
                written = export_merged(folder, out, overwrite=True)
            elif mode == "adapter":
                written = export_adapter(folder, out, overwrite=True)
            else:
                written = export_weights(folder, out, overwrite=True)
            return {"path": str(written), **(self.commands(Path(written)) if mode != "adapter" else {})}

        job = self.jobs.submit("export", f"export {run}/{folder.name} ({mode})", call=work)
        return self.job_dict(job)

    def save_review(self, body: dict[str, Any]) -> dict[str, Any]:
        work = review.work_dir(self.roots, body.get("path", ""))
        overrides = review.rerun_overrides(work)
        source = next(o.split("=", 1)[1] for o in overrides if o.startswith("data.path="))
        forms.Setting("data.path", "path", "recordings").check(source, self.roots)  # the re-run reads only under the roots
        rows = review.save(work, body.get("changes") or {}, str(body.get("version", "")))
        argv, command = forms.command("f5app.prepare", overrides, self.roots.output_root)
        job = self.jobs.submit("prepare", f"prepare {Path(source).name} again", argv=argv, command=command)
        return {"rows": len(rows), "version": review.version(work), "job": self.job_dict(job)}


def create_app(settings: StudioConfig, api_key: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Any:
    studio = Studio(settings, env=env)
    app = FastAPI(title="f5app studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio

    @app.middleware("http")
    async def errors_and_key(request: Request, call_next):  # noqa: ANN001, ANN202
        if api_key is not None and request.url.path.startswith("/api/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return _error(401, "missing or wrong key: send Authorization: Bearer <key>")
        try:
            return await call_next(request)
        except PathRefused as error:
            return _error(403, str(error))
        except JobRefused as error:
            return _error(error.status, str(error))
        except review.ReviewConflict as error:
            return _error(409, str(error))
        except UserError as error:
            return _error(400, str(error))

    # Added after the middleware above, so it runs first (install_guard's rule): Host, Origin and
    # Content-Type are checked before the key or any route.
    install_guard(app, GuardPolicy.from_config(settings.server, key_required=api_key is not None))

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise UserError("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise UserError("the body must be a JSON object")
        return body

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(PAGES_DIR / "index.html", media_type="text/html")

    app.mount("/pages", StaticFiles(directory=PAGES_DIR), name="pages")

    @app.get("/api/runs")
    async def runs() -> dict:
        rows = await run_in_threadpool(state.list_runs, studio.roots)
        training = studio.jobs.training()
        return {"output_root": str(studio.roots.output_root), "runs": rows, "training": studio.job_dict(training) if training else None}

    @app.get("/api/runs/{name}")
    async def run(name: str, sweep: Optional[str] = None) -> dict:
        folder = studio.run_dir(name, sweep)
        detail = await run_in_threadpool(state.run_detail, folder, name, sweep)
        for row in detail["checkpoints"]:
            if row["status"] == "ok":
                row["commands"] = studio.commands(Path(row["path"]))
        detail["pinned_command"] = f"python -m f5app.infer output_root={studio.roots.output_root} run_name={name} ckpt=pinned text=\"Hello.\""
        return detail

    @app.get("/api/file")
    async def file(path: str) -> FileResponse:
        resolved = studio.roots.inside(path)
        media = SERVED_SUFFIXES.get(resolved.suffix.lower())
        if media is None:
            raise PathRefused(f"{resolved.name}: only audio and pictures are served")
        if not resolved.is_file():
            raise JobRefused(f"{path} does not exist", 404)
        return FileResponse(resolved, media_type=media)

    @app.post("/api/pin")
    async def pin(request: Request) -> dict:
        return await run_in_threadpool(studio.pin, await body_of(request))

    @app.post("/api/compare", status_code=202)
    async def start_compare(request: Request) -> dict:
        return await run_in_threadpool(studio.start_compare, await body_of(request))

    @app.get("/api/jobs")
    async def jobs() -> dict:
        return {"jobs": [studio.job_dict(job) for job in studio.jobs.list()]}

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str) -> dict:
        return studio.job_dict(studio.jobs.get(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str) -> dict:
        return studio.job_dict(studio.jobs.cancel(job_id))

    @app.get("/api/train/form")
    async def train_form() -> dict:
        return {"settings": forms.form_description(), "data_roots": [str(p) for p in studio.roots.data_roots],
                "output_root": str(studio.roots.output_root)}

    @app.post("/api/train", status_code=202)
    async def train(request: Request) -> dict:
        values = (await body_of(request)).get("values")
        overrides = forms.train_overrides(values, studio.roots)
        return await run_in_threadpool(studio.start_training, overrides, values["run_name"])

    @app.post("/api/train/resume", status_code=202)
    async def resume(request: Request) -> dict:
        return await run_in_threadpool(studio.resume, await body_of(request))

    @app.post("/api/train/stop")
    async def stop() -> dict:
        running = studio.jobs.training()
        if running is None:
            raise JobRefused("no training is running in this studio", 409)
        return studio.job_dict(studio.jobs.cancel(running.id))

    @app.post("/api/export", status_code=202)
    async def export(request: Request) -> dict:
        return await run_in_threadpool(studio.export, await body_of(request))

    @app.get("/api/review")
    async def get_review(path: str) -> dict:
        work = review.work_dir(studio.roots, path)
        loaded = await run_in_threadpool(review.load, work)
        argv, command = forms.command("f5app.prepare", review.rerun_overrides(work), studio.roots.output_root)
        loaded["rerun_command"] = command
        return loaded

    @app.post("/api/review")
    async def post_review(request: Request) -> dict:
        return await run_in_threadpool(studio.save_review, await body_of(request))

    @app.get("/api/reviews")
    async def reviews() -> dict:
        """Recordings folders under the data roots that have a review."""

        found = []
        for root in studio.roots.data_roots:
            for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())] if root.is_dir() else []:
                if (candidate / DEFAULT_WORK_DIR / REVIEW_JSON).is_file():
                    found.append(str(candidate))
        return {"folders": found}

    return with_limits(app, settings.server), studio


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "status": status}}, status_code=status)
