"""``f5app.serve``: the OpenAI-shaped speech API on a real uvicorn server on a free loopback port.

One tiny trained model is loaded once and shared by every server in this file; servers with other
settings (auth, a small queue, a timeout) are cheap to start around it. The synthesizer is wrapped
in a ``Gate`` that counts render calls and can hold them, so the tests about queueing, streaming
and cancellation observe the order of events instead of timing them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from f5app.inference.synthesizer import Synthesizer
from f5app.serve import ServeSettingsError, api_key_for, build
from f5app.serving.formats import pcm16
from f5app.serving.voices import VoiceError, check_name
from infer_fixtures import tiny_run_checkpoint, upstream_ref_wav
from serve_fixtures import run_dir, synth  # noqa: F401 (fixtures)
from serve_fixtures import browser_title, chromium, free_port, running_server, server_process, tiny_serve_settings, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # every test here starts a server

THREE_SENTENCES = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
KEY = "test-key-0123456789"


class Gate:
    """The real Synthesizer; ``render`` calls are recorded, and held once ``hold(n)`` has let n through."""

    def __init__(self, synth: Synthesizer):
        self._synth = synth
        self._condition = threading.Condition()
        self._limit: int | None = None
        self.calls: list[list[str]] = []
        self.entered = threading.Semaphore(0)
        self.fail_on: str | None = None

    def __getattr__(self, name):
        return getattr(self._synth, name)

    def hold(self, after: int = 0) -> None:
        with self._condition:
            self._limit = len(self.calls) + after

    def release(self) -> None:
        with self._condition:
            self._limit = None
            self._condition.notify_all()

    def render(self, chunks, progress=False):
        with self._condition:
            index = len(self.calls)
            self.calls.append([c.text for c in chunks])
            self.entered.release()
            let_through = self._condition.wait_for(lambda: self._limit is None or index < self._limit, timeout=30)
        assert let_through, "the test never released the gate"
        if self.fail_on and any(self.fail_on in c.text for c in chunks):
            raise RuntimeError(f"render refused {self.fail_on!r}")
        return self._synth.render(chunks)


@pytest.fixture
def gate(synth):
    return Gate(synth)


@pytest.fixture(scope="module")
def server(run_dir, synth, tmp_path_factory):
    """The everyday server: defaults, loopback, no key, voices in a temporary folder."""
    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path_factory.mktemp("voices")))
    with running_server(settings, synth) as running:
        yield running


@pytest.fixture
def serve_with(run_dir, tmp_path):
    """serve_with(gate, queue_size=1, ...) -> a started server with those ServerConfig fields."""
    stack = []

    def _start(synthesizer, **server):
        server.setdefault("voices_dir", str(tmp_path / "voices"))
        context = running_server(tiny_serve_settings(run_dir, **server), synthesizer)
        stack.append(context)
        return context.__enter__()

    yield _start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def speech(url, timeout=60, headers=None, **body):
    body.setdefault("model", "tts-1")
    body.setdefault("voice", "default")
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=timeout, headers=headers)


def samples(data: bytes) -> np.ndarray:
    wav, sr = sf.read(io.BytesIO(data), dtype="int16")
    assert sr == 24000
    return wav


def assert_openai_error(response, status, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# ------------------------------------------------------------------------------- OpenAI client
def test_the_official_openai_client_gets_the_audio_the_synthesizer_makes(server, synth):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-on-loopback")
    answer = client.audio.speech.create(model="tts-1", voice="default", input="Hello there, how are you?",
                                        response_format="wav", extra_body={"seed": 3, "stream": False})
    direct = synth.generate("Hello there, how are you?", seed=3)
    assert np.array_equal(samples(answer.content), np.frombuffer(pcm16(direct.wav), dtype="<i2"))

    default_format = client.audio.speech.create(model="tts-1", voice="default", input="Hello there.")
    assert sf.info(io.BytesIO(default_format.content)).format == "MP3"  # OpenAI's default format
    for fmt, container in (("flac", "FLAC"), ("opus", "OGG")):
        encoded = client.audio.speech.create(model="tts-1", voice="default", input="Hi there.", response_format=fmt)
        assert sf.info(io.BytesIO(encoded.content)).format == container
    raw = client.audio.speech.create(model="tts-1", voice="default", input="Hello there, how are you?",
                                     response_format="pcm", extra_body={"seed": 3, "stream": False})
    assert raw.content == pcm16(direct.wav)  # OpenAI's pcm: 16-bit little-endian mono at 24 kHz
    assert [m.id for m in client.models.list()][:2] == ["f5app-voice", "tts-1"]


def test_openai_voice_names_speak_with_the_default_voice_until_one_is_uploaded_under_that_name(serve_with, synth, tmp_path):
    import openai

    running = serve_with(synth)
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="not-needed-on-loopback")
    ask = dict(model="tts-1", input="Good day to you.", response_format="pcm", extra_body={"seed": 2, "stream": False})
    default = client.audio.speech.create(voice="default", **ask).content
    assert client.audio.speech.create(voice="alloy", **ask).content == default
    assert client.audio.speech.create(voice="nova", **ask).content == default

    assert upload(running.url, "alloy", town_clip(), "Some call me nature.").status_code == 201
    town = synth.generate("Good day to you.", tmp_path / "voices" / "alloy" / "reference.flac", "Some call me nature.", seed=2)
    assert client.audio.speech.create(voice="alloy", **ask).content == pcm16(town.wav)
    assert client.audio.speech.create(voice="nova", **ask).content == default


def test_with_streaming_response_receives_the_first_chunk_before_the_rest_is_synthesised(serve_with, gate):
    import openai

    running = serve_with(gate)
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused")
    received = []
    gate.hold(after=1)  # the first render call goes through, the second waits until released
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="default", input=THREE_SENTENCES,
                                                            response_format="pcm", extra_body={"seed": 4}) as response:
        pieces = response.iter_bytes()
        received.append(next(pieces))  # audio arrives while the rest of the text is not synthesised
        assert gate.calls[0] == ["The birch canoe slid on the smooth planks."]
        gate.release()
        received += list(pieces)
    assert len(gate.calls) == 2
    assert b"".join(received) == pcm16(np.concatenate(list(gate._synth.stream(THREE_SENTENCES, seed=4))))


def test_a_streamed_wav_has_an_unknown_length_header_and_the_streamed_audio(server, synth):
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "default", "input": THREE_SENTENCES, "response_format": "wav", "seed": 5}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and "content-length" not in r.headers
        body = b"".join(r.iter_bytes())
    assert body[:4] == b"RIFF" and body[4:8] == b"\xff\xff\xff\xff" and body[40:44] == b"\xff\xff\xff\xff"
    assert body[44:] == pcm16(np.concatenate(list(synth.stream(THREE_SENTENCES, seed=5))))
    assert len(samples(body)) == (len(body) - 44) // 2  # readers take "unknown" as "to the end"


def test_eight_concurrent_clients_each_get_their_own_audio(server, synth):
    def ask(seed, results):
        results[seed] = speech(server.url, input=f"Client number {seed} says hello.", seed=seed, response_format="wav", stream=False)

    results: dict[int, httpx.Response] = {}
    threads = [threading.Thread(target=ask, args=(seed, results)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(8)) and all(r.status_code == 200 for r in results.values())
    for seed in (0, 7):  # concurrency changes nothing: same as alone
        alone = synth.generate(f"Client number {seed} says hello.", seed=seed)
        assert np.array_equal(samples(results[seed].content), np.frombuffer(pcm16(alone.wav), dtype="<i2"))
    assert len({results[s].content for s in results}) == 8


# ------------------------------------------------------------------------------- load and faults
def test_a_full_queue_answers_429_with_retry_after_at_once(serve_with, gate):
    running = serve_with(gate, queue_size=1, max_active=1)
    gate.hold()
    outcomes: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: outcomes.update(a=speech(running.url, input="First in line.", response_format="wav")))
    first.start()
    assert gate.entered.acquire(timeout=30)  # the worker holds the first request
    second = threading.Thread(target=lambda: outcomes.update(b=speech(running.url, input="Second in line.", response_format="wav")))
    second.start()
    deadline = time.monotonic() + 10
    while running.engine.depth() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    refused = speech(running.url, input="No room for me.", response_format="wav")
    assert time.monotonic() - started < 2  # never a hang
    error = assert_openai_error(refused, 429, "queue_full")
    assert int(refused.headers["Retry-After"]) >= 1 and "busy" in error["message"]
    gate.release()
    first.join(60)
    second.join(60)
    assert outcomes["a"].status_code == 200 and outcomes["b"].status_code == 200


def test_a_client_that_disconnects_stops_its_synthesis(serve_with, gate):
    running = serve_with(gate)
    long_text = " ".join(f"Sentence {w} is here." for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")) * 8
    gate.hold()
    client = httpx.Client(timeout=httpx.Timeout(60, read=0.5))
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{running.url}/v1/audio/speech", json={"model": "tts-1", "voice": "default", "input": long_text, "stream": False})
    client.close()  # the connection closes while the first chunk is held
    time.sleep(0.5)  # the server notices the disconnect within its poll interval
    gate.release()
    deadline = time.monotonic() + 10
    while running.engine.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.engine.active() == 0
    plan_chunks = len(gate._synth.plan(long_text, seed=0).chunks)
    assert plan_chunks > 2 and len(gate.calls) <= 2  # dropped after the chunk in flight

    # a streaming client that stops reading after the first piece
    gate.calls.clear()
    with httpx.stream("POST", f"{running.url}/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "default", "input": long_text, "response_format": "pcm"}) as r:
        gate.hold()
        next(r.iter_bytes())
    time.sleep(0.3)
    gate.release()
    deadline = time.monotonic() + 10
    while running.engine.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.engine.active() == 0 and len(gate.calls) <= 3
    assert speech(running.url, input="Still serving.", response_format="wav").status_code == 200


def test_a_request_past_its_time_limit_is_a_504_json_error(serve_with, gate):
    running = serve_with(gate, request_timeout=0.5)
    gate.hold()
    answer = speech(running.url, input="Too slow for the limit.", response_format="wav", stream=False)
    gate.release()
    assert_openai_error(answer, 504, "request_timeout")


def test_an_error_in_one_request_is_its_json_error_and_the_server_keeps_serving(serve_with, gate):
    running = serve_with(gate)
    gate.fail_on = "explode"
    broken = speech(running.url, input="Please explode now.", response_format="wav", stream=False)
    message = assert_openai_error(broken, 500, "synthesis_failed")["message"]
    assert "RuntimeError" in message and "explode" not in message  # the error's own text stays in the server's log
    assert speech(running.url, input="All is well.", response_format="wav").status_code == 200


def test_requests_that_arrive_together_share_a_batch_and_a_bad_one_fails_alone(serve_with, synth, gate):
    before = synth.max_batch
    synth.max_batch = 4
    try:
        running = serve_with(gate)
        gate.hold()
        gate.fail_on = "explode"
        results: dict[str, httpx.Response] = {}
        texts = {"good": "A good sentence here.", "bad": "This one will explode.", "fine": "Another fine sentence."}
        threads = [threading.Thread(target=lambda k=k, t=t: results.update({k: speech(running.url, input=t, seed=1, response_format="wav", stream=False)}))
                   for k, t in texts.items()]
        threads[0].start()
        assert gate.entered.acquire(timeout=30)  # the first request is held in the worker...
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 10
        while running.engine.depth() + running.engine.active() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.release()  # ...while the other two queue up behind it
        for thread in threads:
            thread.join(60)
        assert ["This one will explode.", "Another fine sentence."] in [sorted(c, reverse=True) for c in gate.calls]  # one batch
        assert results["good"].status_code == 200 and results["fine"].status_code == 200
        assert_openai_error(results["bad"], 500, "synthesis_failed")
        alone = synth.generate(texts["fine"], seed=1).wav
        assert np.abs(samples(results["fine"].content).astype(float) - np.frombuffer(pcm16(alone), "<i2")).max() <= 2
    finally:
        synth.max_batch = before


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"input": ""}, 400, None),
        ({"input": "x" * 4097}, 400, "string_above_max_length"),
        ({"input": "Hi.", "response_format": "aac"}, 400, None),
        ({"input": "Hi.", "response_format": "ogg-vorbis"}, 400, None),
        ({"input": "Hi.", "speed": 9}, 400, None),
        ({"input": "Hi.", "nfe_step": 1000}, 400, None),
        ({"input": "Hi.", "temperature": 1}, 400, "extra_forbidden"),
        ({"model": "tts-9", "input": "Hi."}, 404, "model_not_found"),
        ({"input": "Hi.", "voice": "nobody"}, 404, "voice_not_found"),
        ({"input": "Hi.", "voice": "../../etc/passwd"}, 400, "invalid_voice"),
        ({"input": "Hi.", "stream_format": "sse"}, 400, None),
        ({"input": "Hi.", "voice": {"name": "no id"}}, 400, "invalid_voice"),
    ],
)
def test_bad_speech_requests_are_openai_shaped_errors(server, body, status, code):
    assert_openai_error(speech(server.url, **body), status, code)


def test_other_error_statuses_are_json_too(server):
    url = server.url
    assert_openai_error(httpx.post(f"{url}/v1/audio/speech", content=b"not json", headers={"content-type": "application/json"}), 400)
    assert_openai_error(httpx.post(f"{url}/v1/audio/speech", json=["a list"]), 400)
    assert_openai_error(httpx.get(f"{url}/v1/audio/speech"), 405)
    assert_openai_error(httpx.get(f"{url}/v1/nothing-here"), 404, "not_found")
    assert_openai_error(httpx.post(f"{url}/v1/audio/speech", content=b"{" + b" " * 70000 + b"}",
                                   headers={"content-type": "application/json"}), 413, "request_too_large")

    def unsized():  # no Content-Length: counted as it arrives
        yield b'{"input": "'
        for _ in range(100):
            yield b"x" * 1000

    assert_openai_error(httpx.post(f"{url}/v1/audio/speech", content=unsized(), headers={"content-type": "application/json"}), 413)
    assert_openai_error(httpx.delete(f"{url}/v1/voices/default"), 403, "voice_read_only")
    assert_openai_error(httpx.delete(f"{url}/v1/voices/nobody"), 404, "voice_not_found")


def test_health_is_503_until_the_model_is_loaded(run_dir, synth, tmp_path, monkeypatch):
    import f5app.serve as serve_module

    loaded = threading.Event()

    def slow_load(engine, settings):  # stands in for loading a big model
        loaded.wait(30)
        engine.attach(synth)

    monkeypatch.setattr(serve_module, "load_into", slow_load)
    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "v"))
    with running_server(settings) as running:
        waiting = httpx.get(f"{running.url}/health")
        assert waiting.status_code == 503 and waiting.json()["status"] == "loading" and waiting.headers["Retry-After"]
        assert_openai_error(speech(running.url, input="Too early."), 503, "model_loading")
        loaded.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{running.url}/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(f"{running.url}/health").json()["status"] == "ok"


# ------------------------------------------------------------------------------- auth
def test_with_an_api_key_every_api_call_needs_the_bearer_token(serve_with, synth):
    running = serve_with(synth, api_key=KEY)
    url = running.url
    for call in (lambda h: httpx.get(f"{url}/v1/models", headers=h), lambda h: httpx.get(f"{url}/metrics", headers=h),
                 lambda h: httpx.get(f"{url}/v1/voices", headers=h), lambda h: speech(url, input="Hi.", headers=h, response_format="wav")):
        assert_openai_error(call(None), 401, "invalid_api_key")
        assert_openai_error(call({"Authorization": "Bearer wrong-key-000"}), 401, "invalid_api_key")
        assert_openai_error(call({"Authorization": f"Basic {KEY}"}), 401, "invalid_api_key")
        assert call({"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200  # the page asks for the key itself

    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    assert client.audio.speech.create(model="tts-1", voice="default", input="Hi.", response_format="wav").content[:4] == b"RIFF"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key-000").models.list()


def test_binding_beyond_loopback_needs_a_key_and_the_environment_can_hold_it(run_dir, monkeypatch):
    monkeypatch.delenv("F5APP_API_KEY", raising=False)
    for host in ("0.0.0.0", "192.168.1.20", "::", "myhost.example"):
        with pytest.raises(ServeSettingsError, match=f"server.host={host} is reachable from other machines: set an API key"):
            build(tiny_serve_settings(run_dir, host=host))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert api_key_for(tiny_serve_settings(run_dir, host=host).server) is None
    monkeypatch.setenv("F5APP_API_KEY", KEY)
    assert api_key_for(tiny_serve_settings(run_dir, host="0.0.0.0").server) == KEY
    with pytest.raises(ServeSettingsError, match="at least 8"):
        api_key_for(tiny_serve_settings(run_dir, api_key="short").server)


def test_cors_is_off_unless_origins_are_configured(server, serve_with, synth):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(f"{server.url}/v1/audio/speech", headers=preflight).headers
    running = serve_with(synth, cors_origins=["http://elsewhere.example"])
    allowed = httpx.options(f"{running.url}/v1/audio/speech", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://elsewhere.example"


# ------------------------------------------------------------------------------- voices
def upload(url, name, data, transcript=None, filename="clip.wav", headers=None):
    fields = {"name": name} | ({"transcript": transcript} if transcript is not None else {})
    return httpx.post(f"{url}/v1/voices", data=fields, files={"file": (filename, data, "audio/wav")}, timeout=60, headers=headers)


def town_clip() -> bytes:
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, wav[: int(sr * 2.8)] * 0.5, sr, format="WAV")
    return buffer.getvalue()


def test_voices_are_uploaded_listed_used_and_deleted(serve_with, synth, tmp_path):
    running = serve_with(synth)
    url = running.url
    assert [v["name"] for v in httpx.get(f"{url}/v1/voices").json()["data"]] == ["default"]
    added = upload(url, "town", town_clip(), "Some call me nature.")
    assert added.status_code == 201 and added.json()["name"] == "town" and added.json()["source"] == "uploaded"
    assert [v["name"] for v in httpx.get(f"{url}/v1/voices").json()["data"]] == ["default", "town"]
    assert (tmp_path / "voices" / "town" / "reference.flac").is_file()

    spoken = speech(url, input="Good day to you.", voice="town", seed=2, response_format="wav", stream=False)
    direct = synth.generate("Good day to you.", tmp_path / "voices" / "town" / "reference.flac", "Some call me nature.", seed=2)
    assert np.array_equal(samples(spoken.content), np.frombuffer(pcm16(direct.wav), "<i2"))

    assert_openai_error(upload(url, "town", town_clip(), "Again."), 409, "voice_exists")
    assert httpx.delete(f"{url}/v1/voices/town").json() == {"id": "town", "object": "voice", "deleted": True}
    assert_openai_error(speech(url, input="Hi.", voice="town"), 404, "voice_not_found")
    assert not (tmp_path / "voices" / "town").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 65, "with space", "..", "default"])
def test_a_voice_name_that_could_leave_the_folder_or_clash_is_refused_and_nothing_is_written(serve_with, synth, tmp_path, name):
    running = serve_with(synth)
    answer = upload(running.url, name, town_clip(), "Some call me nature.")
    assert_openai_error(answer, 409 if name == "default" else 400)
    assert not any(tmp_path.rglob("reference.flac"))
    if name != "default":
        with pytest.raises(VoiceError):
            check_name(name)


def test_an_upload_that_is_not_usable_audio_is_refused_and_not_kept(serve_with, synth, tmp_path):
    running = serve_with(synth, max_upload_bytes=200_000)
    url = running.url
    assert_openai_error(upload(url, "fake", b"RIFF....WAVEnot really audio at all", "Words."), 400, "invalid_voice")
    silence = io.BytesIO()
    sf.write(silence, np.zeros(24000, dtype=np.float32), 24000, format="WAV")
    assert "silent" in assert_openai_error(upload(url, "quiet", silence.getvalue(), "Words."), 400)["message"]
    assert_openai_error(upload(url, "huge", b"\0" * 300_000, "Words."), 413, "request_too_large")
    missing = assert_openai_error(upload(url, "notext", town_clip()), 400, "invalid_voice")
    assert "transcript" in missing["message"]
    assert not any((tmp_path / "voices").rglob("*")) if (tmp_path / "voices").exists() else True


def test_an_upload_without_a_transcript_is_transcribed_when_an_asr_is_wired(run_dir, synth, tmp_path):
    heard: list[int] = []

    def transcribe(path: Path) -> str:
        heard.append(sf.info(path).samplerate)
        return "Some call me nature."

    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "voices"))
    with running_server(settings, synth, transcribe=transcribe) as running:
        added = upload(running.url, "asr", town_clip())
    assert added.status_code == 201 and added.json()["transcript"] == "Some call me nature."
    assert heard == [24000]


def test_with_transcribe_uploads_the_configured_asr_writes_the_transcript(run_dir, synth, tmp_path):
    from dataclasses import replace

    from f5app.config import AsrConfig
    from f5app.inference.defaults import upstream_reference
    from f5app.serve import upload_transcriber

    settings = replace(tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "voices"), transcribe_uploads=True),
                       asr=AsrConfig(name="tiny_en", beam_size=1))
    with running_server(settings, synth, transcribe=upload_transcriber(settings)) as running:
        added = upload(running.url, "nature", upstream_reference().audio.read_bytes())
    assert added.status_code == 201, added.text
    assert added.json()["transcript"].lower().replace(",", "").replace(".", "") == "some call me nature others call me mother nature"
    assert upload_transcriber(tiny_serve_settings(run_dir)) is None  # off unless asked for


def test_a_restarted_server_still_has_the_uploaded_voices(run_dir, synth, tmp_path):
    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "voices"))
    with running_server(settings, synth) as first:
        assert upload(first.url, "keeper", town_clip(), "Some call me nature.").status_code == 201
    with running_server(settings, synth) as second:
        names = [v["name"] for v in httpx.get(f"{second.url}/v1/voices").json()["data"]]
        assert names == ["default", "keeper"]
        assert speech(second.url, input="I am still here.", voice="keeper", response_format="wav").status_code == 200


# ------------------------------------------------------------------------------- metrics
def test_metrics_count_requests_by_status_latency_audio_and_queue(server):
    speech(server.url, input="Counted once.", response_format="wav", stream=False)
    speech(server.url, input="Hi.", model="nope")
    text = httpx.get(f"{server.url}/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(lines['f5app_requests_total{endpoint="/v1/audio/speech",status="200"}']) >= 1
    assert int(lines['f5app_requests_total{endpoint="/v1/audio/speech",status="404"}']) >= 1
    assert int(lines['f5app_request_duration_seconds_bucket{endpoint="/v1/audio/speech",le="+Inf"}']) >= 2
    assert float(lines["f5app_audio_seconds_total"]) > 0
    assert lines["f5app_queue_depth"] == "0" and lines["f5app_model_ready"] == "1"
    assert "# TYPE f5app_request_duration_seconds histogram" in text


# ------------------------------------------------------------------------------- the page
@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (scripts/test.sh installs it where apt-get can)")
def test_the_page_speaks_in_headless_chromium(server, tmp_path):
    """Load the page, type, click Speak: the audio element must load playable audio.

    The page's test hook (?autotest=TEXT) types and clicks, then writes the audio element's state
    into the page title. The page's calls carry its Origin, so this also shows the guard lets the
    server's own page through.
    """
    url = f"{server.url}/?autotest=" + urllib.parse.quote("Hello from the page.")
    title = browser_title(url, tmp_path / "profile", ("autotest: playable", "autotest: media error"))
    status, _, seconds = title.removeprefix("autotest: ").partition(" ")
    assert status == "playable" and float(seconds) > 0.3, f"the page reported {title!r}"


# ------------------------------------------------------------------------------- a real process
@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path):
    tiny_run_checkpoint(tmp_path / "outputs" / "runs" / "demo", update=2)
    port, log = free_port(), tmp_path / "serve.log"
    process = server_process([sys.executable, "-m", "f5app.serve", f"server.port={port}", "nfe_step=8", "vocoder.n_iter=4", "device=cpu"],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        long_text = " ".join(f"Sentence number {w} is here, and it goes on." for w in ("one", "two", "three", "four", "five", "six")) * 3
        result: dict[str, httpx.Response] = {}
        request = threading.Thread(target=lambda: result.update(r=speech(url, input=long_text, response_format="wav", stream=False, timeout=120)))
        request.start()
        deadline = time.monotonic() + 30
        while json.loads(httpx.get(f"{url}/health").text)["active"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        request.join(120)
        assert process.wait(60) == 0
        answer = result["r"]
        assert answer.status_code == 200 and len(samples(answer.content)) / 24000 > 10  # the whole text, not cut off
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
        assert "stopped" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_ref_audio_and_ref_text_make_the_default_voice_and_infer_only_keys_are_refused(run_dir, synth, tmp_path):
    clip = tmp_path / "me.wav"
    clip.write_bytes(town_clip())
    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "voices"))
    settings.ref_audio, settings.ref_text = str(clip), "Some call me nature."
    with running_server(settings, synth) as running:
        listed = httpx.get(f"{running.url}/v1/voices").json()["data"]
        assert listed[0]["name"] == "default" and listed[0]["transcript"] == "Some call me nature."
        spoken = speech(running.url, input="Good day.", seed=1, response_format="wav", stream=False)
    assert np.array_equal(samples(spoken.content), np.frombuffer(pcm16(synth.generate("Good day.", clip, "Some call me nature.", seed=1).wav), "<i2"))
    settings.ref_text = None
    with pytest.raises(ServeSettingsError, match="ref_audio and ref_text go together"):
        build(settings)
    settings = tiny_serve_settings(run_dir)
    settings.text = "Hello."
    with pytest.raises(ServeSettingsError, match="text= is f5app.infer's"):
        build(settings)


def test_a_voice_deleted_and_uploaded_again_speaks_with_the_new_clip(serve_with, synth, tmp_path):
    running = serve_with(synth)
    assert upload(running.url, "again", town_clip(), "Some call me nature.").status_code == 201
    first = speech(running.url, input="Good day.", voice="again", seed=1, response_format="wav", stream=False).content
    assert httpx.delete(f"{running.url}/v1/voices/again").status_code == 200
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    other = io.BytesIO()
    sf.write(other, wav[int(sr * 0.5): int(sr * 3.5)], sr, format="WAV")
    assert upload(running.url, "again", other.getvalue(), "Some call me nature.").status_code == 201
    second = speech(running.url, input="Good day.", voice="again", seed=1, response_format="wav", stream=False).content
    assert first != second  # not the first clip, remembered from the cache
    direct = synth.generate("Good day.", tmp_path / "voices" / "again" / "reference.flac", "Some call me nature.", seed=1)
    assert np.array_equal(samples(second), np.frombuffer(pcm16(direct.wav), "<i2"))


def test_a_checkpoint_that_cannot_load_stops_the_server_with_the_resolution_error(tmp_path):
    from f5app.ckpt.resolve import ResolutionError
    from f5app.config import CkptConfig
    from f5app.serve import run

    settings = tiny_serve_settings(tmp_path / "runs" / "empty", port=free_port(), voices_dir=str(tmp_path / "voices"))
    settings.ckpt = CkptConfig(name="best")
    with pytest.raises(ResolutionError, match="best"):
        run(settings)  # listens, fails to load, stops: the error is the command's one line (exit 2)


def test_a_voice_can_be_named_as_an_object_with_an_id_as_newer_openai_clients_send_it(server):
    answer = speech(server.url, input="Hi there.", voice={"id": "default"}, response_format="wav", stream=False)
    assert answer.status_code == 200 and answer.content[:4] == b"RIFF"
