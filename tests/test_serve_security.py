"""The speech server against what a page on another site, a rebinding host name or one hostile
upload can send (issue 18): each finding of the security review, sent as the real request to a
real server on a loopback port, and the refusal read back.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import threading
import time
import urllib.parse

import httpx
import numpy as np
import pytest
import soundfile as sf

from f5app.inference.synthesizer import Synthesizer
from f5app.serve import ServeSettingsError, build
from f5app.serving.formats import pcm16, wav_header
from infer_fixtures import upstream_ref_wav
from serve_fixtures import run_dir, synth  # noqa: F401 (fixtures)
from serve_fixtures import browser_title, chromium, running_server, tiny_serve_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ATTACKER = "http://attacker.example"
SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "default", "response_format": "wav", "stream": False}
THREE_SENTENCES = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
KEY = "test-key-0123456789"


@pytest.fixture
def serve_with(run_dir, synth, tmp_path):
    """serve_with(allowed_hosts=[...], ...) -> a started server with those ServerConfig fields."""
    stack = []

    def _start(synthesizer=None, **server):
        server.setdefault("voices_dir", str(tmp_path / "voices"))
        context = running_server(tiny_serve_settings(run_dir, **server), synthesizer or synth)
        stack.append(context)
        return context.__enter__()

    yield _start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def clip(seconds: float = 2.8) -> bytes:
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, wav[: int(sr * seconds)] * 0.5, sr, format="WAV")
    return buffer.getvalue()


def upload(url, name, data, transcript="Some call me nature.", headers=None):
    return httpx.post(f"{url}/v1/voices", data={"name": name, "transcript": transcript},
                      files={"file": ("clip.wav", data, "audio/wav")}, timeout=60, headers=headers)


def refused(answer, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}
    return error["message"]


def port_of(url: str) -> int:
    return urllib.parse.urlsplit(url).port


def metric(url: str, name: str, headers=None) -> float:
    for line in httpx.get(f"{url}/metrics", headers=headers).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not in /metrics")


# ------------------------------------------------------------------------- 1. other sites, rebinding
def test_the_reviews_three_cross_site_requests_are_refused_and_nothing_is_written(serve_with, tmp_path):
    running = serve_with()
    url = running.url
    # a text/plain JSON body from a page elsewhere (no preflight): was 200 with audio
    speech_text_plain = dict(content=json.dumps(SPEECH), headers={"Content-Type": "text/plain", "Origin": ATTACKER})
    assert "attacker.example" in refused(httpx.post(f"{url}/v1/audio/speech", **speech_text_plain), 403, "origin_not_allowed")
    # a multipart form from that page: was 201, a voice written into the run folder
    refused(upload(url, "planted", clip(), headers={"Origin": ATTACKER}), 403, "origin_not_allowed")
    assert not (tmp_path / "voices").exists() or not any((tmp_path / "voices").iterdir())
    # a rebinding name pointing at 127.0.0.1: was 200 with the list
    refused(httpx.get(f"{url}/v1/voices", headers={"Host": f"attacker.example:{port_of(url)}"}), 421, "misdirected_request")
    refused(httpx.get(f"{url}/v1/voices", headers={"Host": "attacker.example"}), 421, "misdirected_request")
    # without an Origin (a form posted by a program), a text/plain body is still not JSON
    refused(httpx.post(f"{url}/v1/audio/speech", content=json.dumps(SPEECH), headers={"Content-Type": "text/plain"}), 415,
            "unsupported_media_type")
    refused(httpx.post(f"{url}/v1/voices", json={"name": "x"}), 415, "unsupported_media_type")


def test_the_servers_own_page_origin_and_programs_are_served(serve_with):
    running = serve_with()
    url = running.url
    for origin in (url, f"http://localhost:{port_of(url)}"):
        answer = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers={"Origin": origin}, timeout=60)
        assert answer.status_code == 200 and answer.content[:4] == b"RIFF"
    assert upload(url, "mine", clip(), headers={"Origin": url}).status_code == 201
    assert httpx.get(f"{url}/v1/voices", headers={"Host": f"localhost:{port_of(url)}"}).status_code == 200


def test_listed_origins_and_host_names_are_let_in(serve_with):
    running = serve_with(cors_origins=["http://localhost:3000"], allowed_hosts=["tts.lan"])
    url = running.url
    allowed = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers={"Origin": "http://localhost:3000"}, timeout=60)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused(httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers={"Origin": ATTACKER}), 403, "origin_not_allowed")
    assert httpx.get(f"{url}/v1/voices", headers={"Host": f"tts.lan:{port_of(url)}"}).status_code == 200
    refused(httpx.get(f"{url}/v1/voices", headers={"Host": "other.lan"}), 421, "misdirected_request")


def test_with_a_key_the_host_is_not_checked_but_other_origins_still_are(serve_with):
    running = serve_with(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{running.url}/v1/voices", headers={**auth, "Host": "my-server.lan:8000"}).status_code == 200
    refused(httpx.post(f"{running.url}/v1/audio/speech", json=SPEECH, headers={**auth, "Origin": ATTACKER}), 403, "origin_not_allowed")


def test_every_origin_needs_a_key(run_dir):
    with pytest.raises(ServeSettingsError, match="any web site"):
        build(tiny_serve_settings(run_dir, cors_origins=["*"]))
    assert build(tiny_serve_settings(run_dir, cors_origins=["*"], api_key=KEY))[0] is not None


class _Site(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (scripts/test.sh installs it where apt-get can)")
def test_a_page_on_another_origin_in_chromium_cannot_speak_upload_or_read(serve_with, tmp_path, caplog):
    """A real page on another origin (another loopback port) does what a hostile site would:
    a text/plain speech request, a multipart voice upload, and a read of the voice list."""
    running = serve_with()
    site = tmp_path / "site"
    site.mkdir()
    (site / "clip.wav").write_bytes(clip())
    (site / "attack.html").write_text("""<!doctype html><title>attack started</title><script>
const target = new URLSearchParams(location.search).get("target");
(async () => {
  const body = JSON.stringify({model: "tts-1", input: "Hi.", voice: "default", response_format: "wav", stream: false});
  await fetch(target + "/v1/audio/speech", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}).catch(() => {});
  const form = new FormData();
  form.append("name", "planted");
  form.append("transcript", "Some call me nature.");
  form.append("file", await (await fetch("clip.wav")).blob(), "clip.wav");
  await fetch(target + "/v1/voices", {method: "POST", mode: "no-cors", body: form}).catch(() => {});
  let read = "unreadable";
  try { read = "read " + (await fetch(target + "/v1/voices")).status; } catch (e) {}
  document.title = "attack done: " + read;
})();
</script>""")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Site, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        page = f"http://127.0.0.1:{httpd.server_address[1]}/attack.html?target=" + urllib.parse.quote(running.url)
        with caplog.at_level("WARNING", logger="f5app.serving.guard"):
            title = browser_title(page, tmp_path / "profile", ("attack done",))
    finally:
        httpd.shutdown()
    assert title == "attack done: unreadable", title  # the list never reached the page
    refusals = [r.getMessage() for r in caplog.records if r.name == "f5app.serving.guard"]
    for call in ("refused POST /v1/audio/speech", "refused POST /v1/voices", "refused GET /v1/voices"):
        assert any(m.startswith(call) and "origin" in m for m in refusals), refusals
    assert not (tmp_path / "voices" / "planted").exists()
    text = httpx.get(f"{running.url}/metrics").text
    assert 'f5app_requests_total{endpoint="/v1/audio/speech",status="200"}' not in text


# ------------------------------------------------------------------------- 2. decoding before the length check
@pytest.fixture(scope="module")
def ten_minutes_of_eight_channel_silence() -> bytes:
    """The review's case at 8 kHz (the same shape, 8x quicker to encode): 10 min, 8 channels, Ogg Vorbis;
    decoded whole it is 154 MB of float32 from a 40 KB file."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=8000, channels=8, format="OGG", subtype="VORBIS") as out:
        block = np.zeros((80000, 8), dtype=np.float32)
        for _ in range(60):
            out.write(block)
    return buffer.getvalue()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_tiny_file_that_decodes_to_ten_minutes_is_refused_from_its_header(serve_with, ten_minutes_of_eight_channel_silence, tmp_path):
    running = serve_with()
    data = ten_minutes_of_eight_channel_silence
    assert len(data) < 200_000
    peak, done = [_rss_bytes()], threading.Event()
    baseline = peak[0]

    def watch() -> None:  # the server runs in this process: its memory is this process's
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answer = upload(running.url, "bomb", data)
    finally:
        done.set()
        watcher.join()
    message = refused(answer, 400, "invalid_voice")
    assert "600.0 s" in message and "server.max_upload_seconds" in message  # the header's length, not a decoded one
    assert peak[0] - baseline < 60 * 2**20, f"memory grew by {(peak[0] - baseline) / 2**20:.0f} MiB"
    assert not any((tmp_path / "voices").rglob("*.flac")) if (tmp_path / "voices").exists() else True


# ------------------------------------------------------------------------- 9. odd rates, and what error bodies may say
def test_a_wav_claiming_four_megahertz_or_many_channels_is_a_400_that_names_no_file(serve_with, tmp_path):
    running = serve_with()
    noise = (np.random.default_rng(0).standard_normal(24000) * 0.1).astype(np.float32)
    four_mhz = wav_header(4_000_000, 2 * len(noise)) + pcm16(noise)
    fast = upload(running.url, "fast", four_mhz)
    assert "4000000 Hz" in refused(fast, 400, "invalid_voice")
    many = np.tile(noise[:12000], 64)
    wide = upload(running.url, "wide", wav_header(24000, 2 * len(many), channels=64) + pcm16(many))
    assert "64 channels" in refused(wide, 400, "invalid_voice")
    for answer in (fast, wide):
        assert str(tmp_path) not in answer.text and str(os.getpid()) not in answer.text
    assert not (tmp_path / "voices").exists() or not any((tmp_path / "voices").iterdir())


def test_an_unexpected_error_is_a_500_without_paths_pids_or_thread_ids(serve_with, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the voices folder should be")
    running = serve_with(voices_dir=str(blocked))
    answer = upload(running.url, "anyone", clip())
    message = refused(answer, 500, "internal_error")
    assert "FileExistsError" in message or "NotADirectoryError" in message
    assert str(tmp_path) not in answer.text and "not-a-folder" not in answer.text and str(os.getpid()) not in answer.text
    assert str(threading.get_ident()) not in answer.text
    assert httpx.post(f"{running.url}/v1/audio/speech", json=SPEECH, timeout=60).status_code == 200  # still serving


# ------------------------------------------------------------------------- 6. transcripts
def test_a_transcript_far_longer_than_its_clip_is_refused_and_says_why(serve_with, tmp_path):
    running = serve_with()
    too_long = refused(upload(running.url, "novel", clip(), transcript="w" * 200_000), 400, "invalid_voice")
    assert "200000 characters" in too_long and "server.max_transcript_chars" in too_long
    too_dense = refused(upload(running.url, "dense", clip(), transcript="Some call me nature. " * 20), 400, "invalid_voice")
    assert "characters per second" in too_dense and "server.max_transcript_chars_per_second" in too_dense
    assert not (tmp_path / "voices").exists() or not any((tmp_path / "voices").iterdir())
    assert upload(running.url, "fine", clip(), transcript="Some call me nature.").status_code == 201
    spoken = httpx.post(f"{running.url}/v1/audio/speech", json={**SPEECH, "voice": "fine"}, timeout=60)
    assert spoken.status_code == 200


def test_a_long_clip_keeps_only_the_words_of_the_part_synthesis_uses_and_speaks(serve_with):
    """Synthesis keeps max_ref_seconds of a clip: the whole clip's transcript is cut at the same word
    as the audio (f5app/inference/reference.py), so the voice speaks instead of failing every request."""
    running = serve_with()
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    long_clip = io.BytesIO()
    sf.write(long_clip, np.concatenate([wav] * 8), sr, format="WAV")  # 42 s of the same sentence
    transcript = "Some call me nature, others call me mother nature. " * 8
    answer = upload(running.url, "long", long_clip.getvalue(), transcript=transcript)
    assert answer.status_code == 201, answer.text
    voice = answer.json()
    cut = voice["reference"]["cut"]
    assert voice["reference"]["seconds"] <= 12.0 and cut["at_seconds"] <= 12.0
    assert len(voice["transcript"].split()) == cut["kept_words"] < len(transcript.split())
    assert cut["kept_words"] + cut["dropped_words"] == len(transcript.split())
    spoken = httpx.post(f"{running.url}/v1/audio/speech", json={**SPEECH, "voice": "long"}, timeout=120)
    assert spoken.status_code == 200, spoken.text


# ------------------------------------------------------------------------- 5. the reference cache
def test_upload_speak_delete_cycles_do_not_grow_the_reference_cache_and_it_is_bounded(serve_with, run_dir):
    fresh = Synthesizer.from_config(tiny_serve_settings(run_dir), run_dir)  # a cache no other test has filled
    running = serve_with(fresh, reference_cache_size=2)
    url = running.url
    entries = functools.partial(metric, url, "f5app_reference_cache_entries")
    assert httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=60).status_code == 200
    before = entries()
    for cycle in range(4):
        assert upload(url, "cycled", clip(2.4 + 0.1 * cycle)).status_code == 201
        assert httpx.post(f"{url}/v1/audio/speech", json={**SPEECH, "voice": "cycled"}, timeout=60).status_code == 200
        assert entries() == before + 1
        assert httpx.delete(f"{url}/v1/voices/cycled").status_code == 200
        assert entries() == before
    for name in ("one", "two", "three"):
        assert upload(url, name, clip()).status_code == 201
        assert httpx.post(f"{url}/v1/audio/speech", json={**SPEECH, "voice": name}, timeout=60).status_code == 200
    assert entries() == 2


# ------------------------------------------------------------------------- 12. streamed or not, the same audio
@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_the_same_seed_gives_the_same_samples_streamed_or_not(serve_with, fmt):
    running = serve_with()
    ask = {**SPEECH, "input": THREE_SENTENCES, "seed": 9, "response_format": fmt}
    whole = httpx.post(f"{running.url}/v1/audio/speech", json={**ask, "stream": False}, timeout=120)
    with httpx.stream("POST", f"{running.url}/v1/audio/speech", json={**ask, "stream": True}, timeout=120) as streamed:
        assert "content-length" not in streamed.headers  # really streamed
        pieces = b"".join(streamed.iter_bytes())
        chunks = streamed.headers["X-Chunks"]
    assert whole.status_code == 200 and whole.headers["X-Chunks"] == chunks and int(chunks) > 1
    if fmt == "wav":
        whole_samples, pieces = whole.content[44:], pieces[44:]
    else:
        whole_samples = whole.content
    assert len(whole_samples) > 0 and whole_samples == pieces
