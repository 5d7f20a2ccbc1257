"""python -m f5app.studio over real runs: a demo run (evaluated), a LoRA run, a recordings set.

The runs are made by the real trainer and the recordings by the real data=recordings pipeline;
the studio listens on a free loopback port; training, comparisons and preparation run as the
child processes the page starts. The pages are driven in headless Chromium through their
``?autotest=`` hook, which writes the outcome into the page title (as the serve page's test does).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from f5app.ckpt import layout
from f5app.ckpt.export import export_weights
from f5app.ckpt.resolve import resolve
from f5app.ckpt.store import CheckpointStore
from f5app.config import CkptConfig, ServerConfig, StudioConfig
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
EVAL = {"eval.every": 2, "eval.num_prompts": 2, "eval.nfe_step": 4, "asr.beam_size": 1, "vocoder.n_iter": 4}


def compose_once(config_name: str, overrides: list[str] | None = None):
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides or [])


def recordings_data(folder: Path):
    """data=recordings on ``folder`` with the bundled tiny.en, as ``f5app.prepare ... asr=tiny_en`` composes it."""
    from omegaconf import OmegaConf

    from f5app.config import RecordingsDataConfig, to_settings

    # data.speaker=all: the recording holds two of f5-tts's voices, and which are kept is not what is tested here
    cfg = compose_once("prepare", ["data=recordings", f"data.path={folder}", "asr=tiny_en", "data.speaker=all"])
    return to_settings(OmegaConf.to_container(cfg.data, resolve=True), RecordingsDataConfig)


def newest(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("update_*[0-9]"))[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread) -> dict:
    """outputs/runs/{demo,base,lora} trained for real, and data/my_recordings prepared for real."""
    from f5app.data.sources import prepare_data as prepare
    from f5app.data.recordings import example

    root = tmp_path_factory.mktemp("studio")
    outputs, data = root / "outputs", root / "data"
    voice = make_voice_folder(data)
    runs = outputs / "runs"
    train_in_process(compose_once, runs / "demo", tiny_overrides(voice, **{**EVAL, "trainer.max_updates": 4, "trainer.save_every": 2,
                                                                           "trainer.val_every": 2, "ckpt.keep_last": 0}))
    train_in_process(compose_once, runs / "base", tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 4}))
    (root / "upstream").mkdir()
    base = export_weights(newest(runs / "base"), root / "upstream" / "model_4.safetensors")
    train_in_process(compose_once, runs / "lora", tiny_overrides(voice, **{"finetune": "lora", "finetune.rank": 4, "ckpt.path": str(base),
                                                                           "optim.lr": 0.05, "trainer.max_updates": 2, "trainer.save_every": 2}))
    recordings = data / "my_recordings"
    example.write(recordings / "passages.wav", [("silence", 1.0), ("speech", "nature"), ("silence", 1.5), ("speech", "stella"),
                                                ("silence", 1.0)], sample_rate=22050, channels=1)
    prepare(recordings_data(recordings), progress=False)
    return {"root": root, "outputs": outputs, "data": data, "voice": voice, "recordings": recordings, "base": base}


class Studio:
    def __init__(self, url: str, app_studio, web, thread):  # noqa: ANN001
        self.url, self.studio, self.web, self.thread = url, app_studio, web, thread

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60, **kw)

    def post(self, path: str, body: dict | None = None, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=body if body is not None else {}, timeout=60, **kw)

    def wait_job(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job['state']}: {job['log_tail'][-5:]}")


def start_studio(outputs: Path, data_roots: list[Path]) -> Studio:
    import uvicorn

    from f5app.studio.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = StudioConfig(output_root=str(outputs), data_roots=[str(p) for p in data_roots], server=ServerConfig(port=port, max_request_bytes=262144))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    app, studio = create_app(settings, env=env)
    web = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not web.started:
        time.sleep(0.05)
    return Studio(f"http://127.0.0.1:{port}", studio, web, thread)


@pytest.fixture(scope="module")
def studio(world):
    running = start_studio(world["outputs"], [world["data"]])
    yield running
    running.studio.jobs.close(timeout=30)
    running.web.should_exit = True
    running.thread.join(30)


# ------------------------------------------------------------------------------- JSON endpoints
def test_the_runs_list_shows_every_run_with_its_state_progress_and_scores(studio):
    runs = {row["name"]: row for row in studio.get("/api/runs").json()["runs"]}
    assert set(runs) == {"demo", "base", "lora"}
    demo = runs["demo"]
    assert demo["state"] == "finished" and demo["update"] == 4 and demo["max_updates"] == 4
    assert demo["val_loss"] is not None and demo["loss"] is not None and demo["best_wer"] is not None and demo["best_sim"] is not None
    assert demo["age_seconds"] >= 0 and demo["locked_by"] is None
    assert runs["lora"]["finetune"] == "lora"


def test_a_run_page_has_curves_checkpoints_with_marks_and_playable_evaluation_clips(studio, world):
    run = studio.get("/api/runs/demo").json()
    assert [row["update"] for row in run["checkpoints"]] == [4, 2]
    latest = run["checkpoints"][0]
    assert "last" in latest["marks"] and latest["status"] == "ok" and latest["size_bytes"] > 0
    assert latest["wer"] is not None and latest["sim"] is not None and latest["val_loss"] is not None
    assert [p[0] for p in run["curves"]["val_loss"]] == [2, 4] and [p[0] for p in run["curves"]["eval"]] == [2, 4]
    assert [p[0] for p in run["curves"]["loss"]] == [2, 4]
    assert "f5app.serve" in latest["commands"]["serve"] and f"ckpt.path={latest['path']}" in latest["commands"]["serve"]
    evaluation = run["evaluations"][0]
    assert evaluation["update"] == 4 and len(evaluation["clips"]) == 2
    clip = evaluation["clips"][0]
    assert clip["text"] and clip["transcript"] is not None and clip["wer"] is not None
    audio = studio.get("/api/file", params={"path": clip["audio"]})
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    lora = studio.get("/api/runs/lora").json()["checkpoints"][0]
    assert lora["adapter"] and lora["base"] == str(world["base"])
    assert studio.get("/api/runs/nothing").status_code == 404


def test_jobs_form_and_reviews_endpoints(studio, world):
    form = studio.get("/api/train/form").json()
    assert {s["key"] for s in form["settings"]} >= {"run_name", "data.path", "trainer.max_updates", "optim.lr"}
    assert form["data_roots"] == [str(world["data"].resolve())]
    assert studio.get("/api/reviews").json()["folders"] == [str(world["recordings"].resolve())]
    review = studio.get("/api/review", params={"path": str(world["recordings"])}).json()
    assert review["clips"] and all({"text", "confidence", "loudness_lufs", "flags", "seconds", "audio"} <= set(c) for c in review["clips"])
    assert "python -m f5app.prepare" in review["rerun_command"] and "asr=tiny_en" in review["rerun_command"]
    assert isinstance(studio.get("/api/jobs").json()["jobs"], list)
    assert studio.get("/api/jobs/none").status_code == 404


# ------------------------------------------------------------------------------- refusals
def test_paths_outside_the_roots_are_refused(studio, world, tmp_path):
    secret = tmp_path / "secret.wav"
    shutil.copy(world["voice"] / "wavs" / "clip00.wav", secret)
    link = world["outputs"] / "runs" / "demo" / "eval" / "escape.wav"
    link.symlink_to(secret)
    try:
        for path in (str(secret), str(link), f"{world['outputs']}/../secret.wav", "/etc/passwd", "runs/demo/../../../x.wav"):
            assert studio.get("/api/file", params={"path": path}).status_code == 403, path
        assert studio.get("/api/file", params={"path": str(world["outputs"] / "runs" / "demo" / "run_status.json")}).status_code == 403
        assert studio.get("/api/review", params={"path": str(tmp_path)}).status_code == 403
        assert studio.post("/api/pin", {"checkpoint": str(tmp_path)}).status_code == 403
        assert studio.post("/api/compare", {"checkpoints": [str(tmp_path), "/etc"]}).status_code == 403
        assert studio.post("/api/export", {"checkpoint": "/etc"}).status_code == 403
        assert studio.get("/api/runs/..").status_code in (403, 404)
        assert studio.get("/api/runs/demo", params={"sweep": "../runs"}).status_code == 403
        refused = studio.post("/api/train", {"values": {"run_name": "x", "data.path": str(tmp_path)}})
        assert refused.status_code == 403 and "outside" in refused.json()["error"]["message"]
    finally:
        link.unlink()


def test_the_training_form_takes_named_settings_in_range_never_overrides(studio, world):
    hostile = studio.post("/api/train", {"values": {"run_name": "x", "+hydra.callbacks.x._target_": "os.system"}})
    assert hostile.status_code == 400 and "unknown setting" in hostile.json()["error"]["message"]
    for values, words in (({"run_name": "x", "optim.lr": 5}, "between"), ({"run_name": "x", "trainer.max_updates": 1.5}, "integer"),
                          ({"run_name": "../x", "data": "demo"}, "name"), ({"run_name": "x", "model": "evil"}, "not an option"),
                          ({"run_name": "x", "data": "csv_wavs"}, "needs a data folder")):
        answer = studio.post("/api/train", {"values": values})
        assert answer.status_code == 400 and words in answer.json()["error"]["message"], values
    assert not (world["outputs"] / "runs" / "x").exists()


def test_a_page_on_another_origin_a_rebinding_host_and_a_text_plain_body_are_refused(studio):
    body = json.dumps({"values": {"run_name": "evil", "data": "demo"}})
    foreign = httpx.post(studio.url + "/api/train", content=body, headers={"Content-Type": "application/json", "Origin": "http://attacker.example"})
    assert foreign.status_code == 403
    plain = httpx.post(studio.url + "/api/train", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    rebinding = httpx.get(studio.url + "/api/runs", headers={"Host": "attacker.example"})
    assert rebinding.status_code == 421
    own = httpx.get(studio.url + "/api/runs", headers={"Origin": studio.url})
    assert own.status_code == 200
    assert studio.get("/api/jobs").json()["jobs"] == [] or all(j["title"] != "train evil" for j in studio.get("/api/jobs").json()["jobs"])


# ------------------------------------------------------------------------------- pinning
def test_a_pinned_checkpoint_survives_retention_resolves_as_ckpt_pinned_and_is_listed(studio, world, tmp_path):
    run = tmp_path / "pinned_run"
    shutil.copytree(world["outputs"] / "runs" / "demo", run)
    oldest = run / "checkpoints" / "update_00000002"
    studio_paths = start_studio(tmp_path, [])
    try:
        answer = studio_paths.post("/api/pin", {"checkpoint": str(oldest)})
    finally:
        studio_paths.studio.jobs.close(5)
        studio_paths.web.should_exit = True
    assert answer.status_code == 200 and answer.json()["pinned"] == "update_00000002"
    deleted = CheckpointStore(run / "checkpoints", keep_last=1).prune()
    assert deleted == [] and oldest.is_dir()  # the newest is last and best; the oldest is pinned
    layout.write_pointer(run / "checkpoints", "best", "update_00000004", 4, None)
    assert oldest.is_dir()
    chosen = resolve(replace(CkptConfig(), name="pinned", infer_chain=["pinned"]), purpose="infer", run_dir=run, model=None).chosen
    assert chosen is not None and chosen.path == oldest
    listed = subprocess.run([sys.executable, "-m", "f5app.ckpt", "list", str(run), "--json"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    marks = {json.loads(line)["name"]: json.loads(line)["marks"] for line in listed.stdout.splitlines()}
    assert "pinned" in marks["update_00000002"] and "pinned" not in marks["update_00000004"]
    assert (REPO / "conf" / "ckpt" / "pinned.yaml").is_file()


# ------------------------------------------------------------------------------- review
def test_a_review_saved_in_the_page_equals_editing_metadata_csv_by_hand_and_running_again(world, tmp_path):
    from f5app.data.sources import prepare_data as prepare

    by_hand, by_page = tmp_path / "hand" / "rec", tmp_path / "page" / "rec"
    for copy in (by_hand, by_page):
        shutil.copytree(world["recordings"], copy)
    work_hand, work_page = by_hand / "f5app_clips", by_page / "f5app_clips"
    lines = (work_hand / "metadata.csv").read_text(encoding="utf-8").splitlines()
    edited, _ = lines[1].split("|", 1)
    new_text = "Some call me nature; others call me Mother Nature."
    # by hand: change the first text, then run the same command again
    lines[1] = f"{edited}|{new_text}"
    (work_hand / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(recordings_data(by_hand), progress=False)
    # in the page: the same edit, saved
    page = start_studio(tmp_path / "outputs", [tmp_path / "page"])
    try:
        loaded = page.get("/api/review", params={"path": str(by_page)}).json()
        saved = page.post("/api/review", {"path": str(by_page), "version": loaded["version"], "changes": {"texts": {edited: new_text}}})
        assert saved.status_code == 200, saved.text
        job = page.wait_job(saved.json()["job"]["id"])
        assert job["state"] == "finished", job["log_tail"]
        # a second tab that loaded before the save is refused, and says why
        stale = page.post("/api/review", {"path": str(by_page), "version": loaded["version"], "changes": {"texts": {edited: "other"}}})
        assert stale.status_code == 409 and "changed since this page loaded it" in stale.json()["error"]["message"]
    finally:
        page.studio.jobs.close(5)
        page.web.should_exit = True
    assert (work_page / "metadata.csv").read_bytes() == (work_hand / "metadata.csv").read_bytes()
    assert json.loads((work_page / "edits.json").read_text()) == json.loads((work_hand / "edits.json").read_text()) == {
        "added": {}, "removed": [], "texts": {edited: new_text}}
    review_hand, review_page = (json.loads((w / "review.json").read_text()) for w in (work_hand, work_page))
    assert [(c["audio_file"], c["text"], c["flags"]) for c in review_page["clips"]] == [(c["audio_file"], c["text"], c["flags"]) for c in review_hand["clips"]]
    assert sorted(p.name for p in (work_page / "cache").iterdir()) == sorted(p.name for p in (work_hand / "cache").iterdir())


# ------------------------------------------------------------------------------- train and stop
def test_training_started_from_the_page_is_stopped_with_sigterm_saves_and_exits_3(studio, world):
    values = {"run_name": "from_page", "experiment": "demo", "data": "csv_wavs", "data.path": str(world["voice"]),
              "trainer.max_updates": 100000, "trainer.epochs": 100000, "trainer.save_every": 100000, "trainer.val_every": 0, "eval.every": 0, "logger": "none",
              "data.frames_per_gpu": 400, "data.max_samples": 4, "data.val_fraction": 0.25}
    started = studio.post("/api/train", {"values": values})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["command"].startswith("python -m f5app.train output_root=") and "run_name=from_page" in job["command"]
    assert studio.post("/api/train", {"values": {**values, "run_name": "second"}}).status_code == 409  # one at a time
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = studio.get(f"/api/jobs/{job['id']}").json()
        if (job["progress"] or {}).get("done", 0) >= 2 or job["state"] != "running":
            break
        time.sleep(0.5)
    assert job["state"] == "running" and job["progress"]["total"] == 100000, job["log_tail"]
    assert job["progress"]["done"] >= 2, job["progress"]  # a live run's progress, not only its end (run_status.json while training)
    row = next(r for r in studio.get("/api/runs").json()["runs"] if r["name"] == "from_page")
    assert row["state"] == "running" and row["locked_by"].startswith("pid ")
    stopped = studio.post("/api/train/stop")
    assert stopped.status_code == 200
    job = studio.wait_job(job["id"], timeout=120)
    assert job["state"] == "stopped" and job["returncode"] == 3, job["log_tail"]
    run = studio.get("/api/runs/from_page").json()
    assert run["state"] == "stopped" and run["checkpoints"] and run["checkpoints"][0]["status"] == "ok"
    assert run["checkpoints"][0]["update"] == run["update"] >= 2


def test_a_run_locked_by_another_process_is_shown_as_such_and_not_started_twice(studio, world):
    from f5app.training.lock import RunLock

    run_dir = world["outputs"] / "runs" / "base"
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from f5app.training.lock import RunLock; "
                               f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        row = next(r for r in studio.get("/api/runs").json()["runs"] if r["name"] == "base")
        assert row["state"] == "running" and f"pid {holder.pid}" in row["locked_by"]
        refused = studio.post("/api/train/resume", {"run": "base"})
        assert refused.status_code == 409 and "not started twice" in refused.json()["error"]["message"]
    finally:
        holder.kill()
        holder.wait()
    assert RunLock  # the lock the trainer takes is the one shown


# ------------------------------------------------------------------------------- the pages in Chromium
def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def page_title(url: str, tmp_path: Path, done: tuple[str, ...] = ("autotest: ",), timeout: float = 240) -> str:
    """Open ``url`` in headless Chromium until its title starts with one of ``done``; that title."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    title = ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not title.startswith(done):
            time.sleep(0.3)
            port_file = profile / "DevToolsActivePort"
            if not port_file.is_file() or not port_file.read_text().strip():
                continue
            try:
                pages = httpx.get(f"http://127.0.0.1:{port_file.read_text().split()[0]}/json/list", timeout=5).json()
            except (httpx.TransportError, ValueError):
                continue
            title = next((p["title"] for p in pages if p.get("url", "").startswith(url.split("?")[0].split("#")[0])), "")
    finally:
        browser.terminate()
        browser.wait(30)
    return title


def screenshot(url: str, out: Path, tmp_path: Path, height: int = 900) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'shot'}",
                    f"--window-size=1280,{height}", "--virtual-time-budget=8000", f"--screenshot={out}", url],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)
    assert out.stat().st_size > 10_000


needs_chromium = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (scripts/test.sh installs it where apt-get can)")


@needs_chromium
def test_the_runs_list_and_a_run_page_in_chromium_show_the_demo_run_and_its_checkpoints(studio, tmp_path):
    title = page_title(f"{studio.url}/?autotest=runs", tmp_path)
    assert title.startswith("autotest: runs") and "demo" in title.split(" ", 2)[2].split(","), title
    title = page_title(f"{studio.url}/?autotest=run&run=demo", tmp_path)
    assert title == "autotest: run demo checkpoints 2 marks 6", title  # two checkpoints, marked on each of three charts
    screenshot(f"{studio.url}/#/", IMAGES / "studio-runs.png", tmp_path, height=420)
    screenshot(f"{studio.url}/#/run/demo", IMAGES / "studio-run.png", tmp_path, height=1250)


@needs_chromium
def test_a_checkpoints_evaluation_clip_plays_in_chromium(studio, tmp_path):
    title = page_title(f"{studio.url}/?autotest=play&run=demo", tmp_path)
    assert title.startswith("autotest: played") and float(title.split()[-1]) > 0.2, title


@needs_chromium
def test_a_side_by_side_comparison_in_chromium_gives_two_clips_with_audio(studio, world, tmp_path):
    demo = newest(world["outputs"] / "runs" / "demo")
    lora = newest(world["outputs"] / "runs" / "lora")
    query = urllib.parse.urlencode([("autotest", "compare"), ("ckpt", str(demo)), ("ckpt", str(lora)), ("seed", "3")])
    title = page_title(f"{studio.url}/?{query}", tmp_path, timeout=400)
    assert title.startswith("autotest: compared 2 "), title
    assert all(float(s) > 0.2 for s in title.split()[-1].split(",")), title
    job = next(j for j in studio.get("/api/jobs").json()["jobs"] if j["kind"] == "compare" and j["state"] == "finished")
    columns = job["comparison"]["columns"]
    assert sorted(c["checkpoint"] for c in columns) == sorted([str(demo), str(lora)])
    assert all(c["items"][0]["transcript"] is not None and c["items"][0]["wer"] is not None and c["items"][0]["seed"] == 3 for c in columns)
    assert "python -m f5app.eval" in job["command"] and "eval.seed=3" in job["command"]
    screenshot(f"{studio.url}/#/compare?job={job['id']}", IMAGES / "studio-compare.png", tmp_path, height=1000)


@needs_chromium
def test_a_transcript_edited_in_the_review_in_chromium_lands_in_metadata_csv(world, tmp_path):
    copy = tmp_path / "data" / "rec"
    shutil.copytree(world["recordings"], copy)
    page = start_studio(tmp_path / "outputs", [tmp_path / "data"])
    try:
        screenshot(f"{page.url}/#/review?path={urllib.parse.quote(str(copy))}", IMAGES / "studio-review.png", tmp_path, height=760)
        metadata = copy / "f5app_clips" / "metadata.csv"
        first = metadata.read_text(encoding="utf-8").splitlines()[1].split("|", 1)[0]
        query = urllib.parse.urlencode({"autotest": "review", "path": str(copy), "file": first, "text": "Some call me nature, edited in the page."})
        title = page_title(f"{page.url}/?{query}", tmp_path, timeout=300)
        assert title == "autotest: saved finished", title
        rows = dict(line.split("|", 1) for line in metadata.read_text(encoding="utf-8").splitlines()[1:])
        assert rows[first] == "Some call me nature, edited in the page."
        assert json.loads((copy / "f5app_clips" / "edits.json").read_text())["texts"] == {first: "Some call me nature, edited in the page."}
    finally:
        page.studio.jobs.close(5)
        page.web.should_exit = True


# ------------------------------------------------------------------------------- export and cancel
def test_export_writes_weights_or_a_merged_adapter_and_shows_the_commands_that_load_it(studio, world):
    demo = newest(world["outputs"] / "runs" / "demo")
    job = studio.wait_job(studio.post("/api/export", {"checkpoint": str(demo), "mode": "weights"}).json()["id"])
    assert job["state"] == "finished", job
    written = Path(job["result"]["path"])
    assert written.is_file() and written.suffix == ".safetensors" and written.is_relative_to(world["outputs"] / "studio" / "exports")
    assert f"ckpt.path={written}" in job["result"]["serve"] and job["result"]["infer"].startswith("python -m f5app.infer ")
    lora = newest(world["outputs"] / "runs" / "lora")
    job = studio.wait_job(studio.post("/api/export", {"checkpoint": str(lora), "mode": "merged"}).json()["id"])
    assert job["state"] == "finished" and Path(job["result"]["path"]).name.endswith("-merged.safetensors"), job
    job = studio.wait_job(studio.post("/api/export", {"checkpoint": str(lora), "mode": "adapter"}).json()["id"])
    assert job["state"] == "finished" and (Path(job["result"]["path"]) / "adapter_config.json").is_file(), job
    refused = studio.post("/api/export", {"checkpoint": str(demo), "mode": "adapter"})
    assert refused.status_code == 400 and "full weights" in refused.json()["error"]["message"]


def test_a_comparison_can_be_cancelled_while_it_runs(studio, world):
    runs = world["outputs"] / "runs"
    started = studio.post("/api/compare", {"checkpoints": [str(newest(runs / "demo")), str(newest(runs / "base"))], "seed": 1, "num_prompts": 1})
    assert started.status_code == 202 and "python -m f5app.eval" in started.json()["command"]
    job_id = started.json()["id"]
    deadline = time.monotonic() + 60
    while studio.get(f"/api/jobs/{job_id}").json()["state"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert studio.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    job = studio.wait_job(job_id, timeout=60)
    assert job["state"] == "cancelled" and job["returncode"] != 0
    assert studio.post(f"/api/jobs/{job_id}/cancel").status_code == 409  # already ended
    assert studio.post("/api/compare", {"checkpoints": [str(newest(runs / "demo"))]}).status_code == 400  # one is not a comparison
