"""The HTTP API: OpenAI's ``/v1/audio/speech`` and ``/v1/models``, voices, health, metrics, the page.

``create_app`` takes plain objects (the server settings, an :class:`Engine` that gets its
Synthesizer once loaded, a :class:`VoiceStore`, :class:`Metrics`), so tests build it around any
synthesizer and ``f5app.serve`` wires the real one. Every error is JSON in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from f5app.config import ServerConfig
from f5app.errors import UserError
from f5app.serving.errors import error_body
from f5app.serving.formats import FORMATS, STREAMABLE, UNSUPPORTED, encode, pcm16, streaming_wav_header
from f5app.serving.guard import FORM, GuardPolicy, install_guard
from f5app.serving.metrics import Metrics
from f5app.serving.text_headers import EXPOSED as TEXT_HEADERS
from f5app.serving.text_headers import normalized_text_headers
from f5app.serving.queue import Cancelled, Engine, QueueFull, SpeechJob
from f5app.serving.voices import VoiceError, VoiceStore

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "page"
#: Model names OpenAI clients send; all of them are this server's one model.
OPENAI_MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_POLL_SECONDS = 0.2


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: Optional[str] = None,
                 param: Optional[str] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param, self.headers = status, message, type_, code, param, headers


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.type, error.code, error.param), status_code=error.status, headers=error.headers)


class SpeechRequest(BaseModel):
    """OpenAI's body for ``POST /v1/audio/speech`` plus f5app's sampling knobs."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    voice: Union[str, dict[str, str]] = "default"
    response_format: str = "mp3"  # OpenAI's default
    speed: Optional[float] = None
    instructions: Optional[str] = None  # accepted for compatibility; the voice comes from the reference clip
    stream_format: Optional[str] = None  # "audio" only
    # f5app's own
    seed: Optional[int] = None
    nfe_step: Optional[int] = None
    cfg_strength: Optional[float] = None
    stream: bool = True  # wav/pcm: send each chunk as it is made (the WAV header then says "length unknown")


def create_app(*, server: ServerConfig, engine: Engine, voices: VoiceStore, metrics: Metrics,
               api_key: Optional[str] = None, model_id: str = "f5app") -> Any:
    """The ASGI app (FastAPI inside the size-limit and metrics wrappers)."""
    app = FastAPI(title="f5app speech server", docs_url=None, redoc_url=None, openapi_url=None)
    model_ids = (model_id, *OPENAI_MODEL_ALIASES)
    if server.cors_origins:  # off by default: only the page at / (same origin) calls this server from a browser
        from fastapi.middleware.cors import CORSMiddleware  # deferred: only servers configured with server.cors_origins add the middleware

        app.add_middleware(CORSMiddleware, allow_origins=list(server.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Seed", "X-Sample-Rate", "X-Chunks", "X-Verify", *TEXT_HEADERS])
    # Added last, so it runs first: Host, Origin and Content-Type are checked before CORS or any route.
    install_guard(app, GuardPolicy.from_config(server, key_required=api_key is not None), content_types={"/v1/voices": FORM})

    # ------------------------------------------------------------------ plumbing
    def require_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                           "invalid_request_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def require_ready() -> Any:
        if engine.load_error is not None:  # the log says why; the reason names the server's own files
            raise ApiError(503, f"the model failed to load ({type(engine.load_error).__name__}); the server's log says why",
                           "server_error", "model_load_failed")
        if not engine.ready:
            raise ApiError(503, "the model is still loading; retry shortly", "server_error", "model_loading", headers={"Retry-After": "5"})
        return engine.synthesizer

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(VoiceError)
    async def _voice_error(_: Request, error: VoiceError) -> JSONResponse:
        return error_response(ApiError(error.status, str(error), "invalid_request_error", error.code, "voice"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        return error_response(ApiError(error.status_code, str(error.detail), "invalid_request_error", codes.get(error.status_code),
                                       headers=getattr(error, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(_invalid(error.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        # The text of an unexpected error names files, processes and threads of this machine: it is
        # logged here and never sent.
        log.exception("unexpected error")
        return error_response(ApiError(500, f"internal error ({type(error).__name__}); the server's log has the details",
                                       "server_error", "internal_error"))

    # ------------------------------------------------------------------ open endpoints
    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.load_error is not None:
            return JSONResponse({"status": "error", "message": "the model failed to load; the server's log says why"}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok", "model": model_id, "auth": api_key is not None,
                             "queue_depth": engine.depth(), "active": engine.active()})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")

    # ------------------------------------------------------------------ authenticated endpoints
    auth = [Depends(require_key)]

    @app.get("/metrics", dependencies=auth)
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "f5app"} for name in model_ids]}

    @app.get("/v1/voices", dependencies=auth)
    async def list_voices() -> dict:
        synth = require_ready()
        default = synth.default_voice.text if getattr(synth, "default_voice", None) else None
        return {"object": "list", "data": [v.to_dict() for v in voices.list(default_transcript=default)]}

    @app.post("/v1/voices", dependencies=auth, status_code=201)
    async def add_voice(request: Request) -> JSONResponse:
        require_ready()
        try:
            form = await request.form(max_files=1, max_fields=4)
        except (AssertionError, ValueError) as exc:  # starlette reports a bad body this way
            raise ApiError(400, f"send multipart/form-data with fields name, file and transcript ({exc})") from None
        name, upload, transcript = form.get("name"), form.get("file"), form.get("transcript")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "the form field `name` is required", param="name")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "the form field `file` must be an uploaded audio file", param="file")
        data = await upload.read(server.max_upload_bytes + 1)
        try:
            voice = await run_in_threadpool(voices.add, name, data, transcript if isinstance(transcript, str) else None, upload.filename)
        except MemoryError:  # that upload's fault, not the server's: the next one may be fine
            raise ApiError(400, "the clip is too large to prepare on this server; send a shorter one", param="file") from None
        return JSONResponse(voice.to_dict(), status_code=201)

    @app.delete("/v1/voices/{name}", dependencies=auth)
    async def delete_voice(name: str) -> dict:
        removed = await run_in_threadpool(voices.delete, name)
        engine.forget_reference(removed.ref_audio)
        return {"id": name, "object": "voice", "deleted": True}

    @app.post("/v1/audio/speech", dependencies=auth)
    async def speech(request: Request) -> Response:
        received = time.monotonic()
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body must be JSON like {\"model\": \"tts-1\", \"input\": \"Hello.\", \"voice\": \"default\"}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with `model`, `input` and `voice`")
        try:
            ask = SpeechRequest.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc.errors()) from None
        fmt = _check_speech(ask, server, model_ids)
        synth = require_ready()
        voice = voices.get(str(ask.voice.get("id", "")) if isinstance(ask.voice, dict) else ask.voice)
        overrides = {k: v for k, v in {"seed": ask.seed, "nfe_step": ask.nfe_step, "cfg_strength": ask.cfg_strength}.items() if v is not None}
        speed = ask.speed if ask.speed is not None else voice.speed
        if speed is not None:
            overrides["speed"] = speed
        stream = ask.stream and fmt in STREAMABLE
        try:
            # Streamed or not, the text is cut the same way (the first sentence alone, so a stream
            # starts early), so one seed gives the same audio in both modes.
            plan = await run_in_threadpool(synth.plan, ask.input, voice.ref_audio, voice.transcript if voice.ref_audio else None,
                                           first_chunk_small=True, **overrides)
        except UserError as exc:
            raise ApiError(400, str(exc), param="input") from None
        job = SpeechJob(plan, stream=stream, sample_rate=synth.sample_rate, deadline=received + server.request_timeout,
                        loop=asyncio.get_running_loop())
        try:
            engine.queue.submit(job)
        except QueueFull as full:
            raise ApiError(429, f"{full}; the queue holds {server.queue_size} requests", "rate_limit_error", "queue_full",
                           headers={"Retry-After": str(full.retry_after)}) from None
        headers = {"X-Seed": str(plan.seed), "X-Sample-Rate": str(synth.sample_rate), "X-Chunks": str(len(plan.chunks)),
                   **normalized_text_headers(plan.normalized_text)}
        media_type = FORMATS[fmt][0]
        kind, value = await _next_event(job, request)
        if kind == "error":
            raise _job_error(value)
        if not stream:
            data = await run_in_threadpool(encode, value.wav, value.sample_rate, fmt)
            metrics.add_audio_seconds(value.seconds)
            if value.verification:  # verify=asr: each chunk's tries (f5app/inference/verify.py)
                headers["X-Verify"] = json.dumps([d.to_dict() for d in value.verification], ensure_ascii=True, separators=(",", ":"))
            return Response(data, media_type=media_type, headers=headers)
        return StreamingResponse(_stream_body(job, fmt, synth.sample_rate, value, metrics), media_type=media_type, headers=headers)

    return with_limits(_with_metrics(app, metrics), server)


def _check_speech(ask: SpeechRequest, server: ServerConfig, model_ids: tuple[str, ...]) -> str:
    if ask.model not in model_ids:
        raise ApiError(404, f"model {ask.model!r} does not exist; this server speaks as: {', '.join(model_ids)}",
                       code="model_not_found", param="model")
    if not ask.input.strip():
        raise ApiError(400, "`input` is empty; send the text to speak", param="input")
    if len(ask.input) > server.max_text_chars:
        raise ApiError(400, f"`input` is {len(ask.input)} characters; the limit is {server.max_text_chars}", "invalid_request_error",
                       "string_above_max_length", "input")
    fmt = ask.response_format.lower()
    if fmt in UNSUPPORTED:
        raise ApiError(400, f"response_format={fmt}: {UNSUPPORTED[fmt]}; use one of {', '.join(FORMATS)}", param="response_format")
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format={fmt!r} is not an option; use one of {', '.join(FORMATS)}", param="response_format")
    if ask.stream_format not in (None, "audio"):
        raise ApiError(400, "stream_format must be `audio` (server-sent events are not offered)", param="stream_format")
    if ask.speed is not None and not 0.25 <= ask.speed <= 4.0:
        raise ApiError(400, f"speed={ask.speed} must be between 0.25 and 4.0", param="speed")
    if ask.nfe_step is not None and not 1 <= ask.nfe_step <= server.max_nfe_step:
        raise ApiError(400, f"nfe_step={ask.nfe_step} must be between 1 and {server.max_nfe_step}", param="nfe_step")
    if ask.cfg_strength is not None and not 0.0 <= ask.cfg_strength <= 10.0:
        raise ApiError(400, f"cfg_strength={ask.cfg_strength} must be between 0 and 10", param="cfg_strength")
    if ask.seed is not None and not 0 <= ask.seed < 2**31:
        raise ApiError(400, f"seed={ask.seed} must be between 0 and 2147483647", param="seed")
    return fmt


def _invalid(errors: list[dict]) -> ApiError:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        message = f"unknown parameter `{where}`"
    elif first.get("type") == "missing":
        message = f"missing required parameter `{where}`"
    elif where:
        message = f"`{where}`: {message}"
    return ApiError(400, message, "invalid_request_error", first.get("type"), where)


def _job_error(error: BaseException) -> ApiError:
    if isinstance(error, Cancelled):
        return ApiError(504, f"{error} (server.request_timeout)", "timeout_error", "request_timeout")
    if isinstance(error, UserError):
        return ApiError(400, str(error), param="input")
    return ApiError(500, f"synthesis failed ({type(error).__name__}); the server's log has the details", "server_error", "synthesis_failed")


async def _next_event(job: SpeechJob, request: Request) -> tuple[str, Any]:
    """The worker's next event for ``job``; a client that goes away or a deadline that passes cancels it."""
    getter = asyncio.ensure_future(job.events.get())
    try:
        while True:
            left = job.deadline - time.monotonic()
            if left <= 0:
                job.cancel()
                return "error", Cancelled("the request ran past its time limit")
            done, _ = await asyncio.wait({getter}, timeout=min(_POLL_SECONDS, left))
            if done:
                return getter.result()
            if await request.is_disconnected():
                job.cancel()
                log.info("client went away; its synthesis stops")
                return "error", Cancelled("the client went away")
    finally:
        if not getter.done():
            getter.cancel()


async def _stream_body(job: SpeechJob, fmt: str, sample_rate: int, first: Any, metrics: Metrics):
    """Header (wav), then each piece as the worker makes it. Cancelled by Starlette when the client leaves."""
    samples = 0
    try:
        if fmt == "wav":
            yield streaming_wav_header(sample_rate)
        kind, value = "audio", first
        while True:
            if kind == "audio":
                samples += len(value)
                if len(value):
                    yield pcm16(value)
            elif kind == "error":
                log.warning("stream ended early: %s", value)  # the status line is sent; the body just stops
                return
            else:
                return
            left = job.deadline - time.monotonic()
            try:
                kind, value = await asyncio.wait_for(job.events.get(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                log.warning("stream ran past server.request_timeout; stopped")
                return
    finally:
        job.cancel()
        metrics.add_audio_seconds(samples / sample_rate)


# ---------------------------------------------------------------------- ASGI wrappers
def _with_metrics(app: Any, metrics: Metrics) -> Any:
    """Counts every HTTP answer by route and status, timed to its last byte."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or ("/page" if scope["path"].startswith("/page/") else "other")
            metrics.observe_request(endpoint, status[0], time.perf_counter() - started)

    return wrapped


def with_limits(app: Any, server: ServerConfig) -> Any:
    """Refuse bodies over the limit (413) from Content-Length, or while they arrive without one."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        upload = scope["path"] == "/v1/voices" and scope["method"] == "POST"
        limit = server.max_upload_bytes + 64 * 1024 if upload else server.max_request_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(ApiError(413, f"the body is {int(declared)} bytes; the limit is {limit}", code="request_too_large"))
            await response(scope, receive, send)
            return
        seen = [0]

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise StarletteHTTPException(413, f"the body is over the limit of {limit} bytes")
            return message

        await app(scope, limited_receive, send)

    return wrapped
