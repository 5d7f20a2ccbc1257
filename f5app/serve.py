"""``python -m f5app.serve``: an OpenAI-compatible speech server for any resolved checkpoint (Hydra entry, thin).

    python -m f5app.serve                                   # the demo run on http://127.0.0.1:8000
    python -m f5app.serve run_name=my_voice ckpt=best server.port=8001
    F5APP_API_KEY=secret python -m f5app.serve server.host=0.0.0.0

The checkpoint resolves exactly as ``f5app.infer``'s (same ``ckpt=`` words, same table). The
server listens at once and answers ``/health`` with 503 until the model is loaded. SIGTERM or
Ctrl-C stops accepting, finishes the requests in flight, and exits 0. Bad settings print
``error: <what to fix>`` and exit 2 before anything loads.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, ServeConfig, VoiceConfig, to_settings
from f5app.errors import exit_on_user_error
from f5app.inference.reference import ReferencePreparer
from f5app.inference.upstream_import import defer_unused_imports
from f5app.serving.listen import ServeSettingsError, api_key_for, signals_end_the_server_cleanly
from f5app.serving.metrics import Metrics
from f5app.serving.voices import VoiceStore

log = logging.getLogger("f5app.serve")


def build(settings: ServeConfig, transcribe=None, references=None):
    """(ASGI app, engine) for ``settings``; the engine gets its Synthesizer from :func:`load_into`.

    ``references``: the reference preparer uploads go through (default: one from ``settings``)."""
    from f5app.inference.synthesizer import parse_voices, require_files  # deferred: f5app.inference.synthesizer costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.serving.app import create_app  # deferred: f5app.serving.app costs 1.09 s to import (fastapi, starlette; -X importtime); --help must stay fast
    from f5app.serving.queue import Engine  # deferred: f5app.serving.queue costs 0.28 s to import (numpy, soundfile; -X importtime); --help must stay fast

    server = settings.server
    api_key = api_key_for(server)
    for key in ("text", "text_file", "out", "out_dir"):
        if getattr(settings, key) is not None:
            raise ServeSettingsError(f"{key}= is f5app.infer's; the server takes its text from POST /v1/audio/speech")
    if "*" in server.cors_origins and api_key is None:
        raise ServeSettingsError("server.cors_origins=['*'] lets a page on any web site call this server: "
                                 "list the origins that may, or set an API key first")
    configured = parse_voices(settings.voices)
    require_files([(f"voices.{name}.ref_audio", v.ref_audio) for name, v in configured.items()] + [("ref_audio", settings.ref_audio)])
    if (settings.ref_audio is None) != (settings.ref_text is None):
        raise ServeSettingsError("ref_audio and ref_text go together: give both (the `default` voice) or neither")
    default = VoiceConfig(ref_audio=settings.ref_audio, ref_text=settings.ref_text) if settings.ref_audio else None
    for key in ("queue_size", "max_active", "max_text_chars", "max_transcript_chars", "reference_cache_size"):
        if getattr(server, key) < 1:
            raise ServeSettingsError(f"server.{key}={getattr(server, key)} must be at least 1")
    if not server.max_transcript_chars_per_second > 0:
        raise ServeSettingsError(f"server.max_transcript_chars_per_second={server.max_transcript_chars_per_second} must be above 0")
    engine = Engine(queue_size=server.queue_size, max_active=server.max_active, reference_cache_size=server.reference_cache_size)
    metrics = Metrics(queue_depth=engine.depth, active=engine.active, ready=lambda: engine.ready,
                      reference_cache=engine.reference_cache_entries)
    voices_dir = Path(server.voices_dir).expanduser() if server.voices_dir else Path(settings.run_dir) / "voices"
    if references is None:
        references = ReferencePreparer(settings.reference, settings.asr, settings.speaker)
    store = VoiceStore(voices_dir, configured, max_upload_bytes=server.max_upload_bytes,
                       max_upload_seconds=server.max_upload_seconds, max_transcript_chars=server.max_transcript_chars,
                       max_transcript_chars_per_second=server.max_transcript_chars_per_second,
                       reference_seconds=settings.max_ref_seconds, transcribe=transcribe, default=default,
                       references=references)
    model_id = server.model_id or f"f5app-{settings.run_name}"
    app = create_app(server=server, engine=engine, voices=store, metrics=metrics, api_key=api_key, model_id=model_id)
    return app, engine


def load_into(engine, settings: ServeConfig, references=None) -> None:
    """Resolve the checkpoint and build the Synthesizer (seconds to minutes), then open the queue."""
    from f5app.inference.synthesizer import Synthesizer  # deferred: f5app.inference.synthesizer costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast

    started = time.perf_counter()
    synthesizer = Synthesizer.from_config(settings, run_dir=Path(settings.run_dir), references=references)
    engine.attach(synthesizer)
    log.info("loaded %s on %s in %.1f s (max_batch %d); ready", synthesizer.source, synthesizer.device,
             time.perf_counter() - started, synthesizer.max_batch)


def upload_transcriber(settings: ServeConfig, references=None):
    """``transcribe(path) -> text`` for uploads without a transcript (``server.transcribe_uploads``),
    with the ``asr=`` group's model (the reference preparer's, when given), built on first use and
    then kept; None when switched off."""
    if not settings.server.transcribe_uploads:
        return None

    preparer = references or ReferencePreparer(settings.reference, settings.asr, settings.speaker)

    @functools.cache
    def transcriber():
        return preparer.transcriber()

    def transcribe(path: Path) -> str:
        import soundfile as sf  # deferred: soundfile (with numpy) costs 0.19 s to import (-X importtime); --help must stay fast

        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return transcriber().transcribe(audio.mean(axis=1), rate, language=settings.asr.language).text

    return transcribe


def run(cfg: DictConfig | ServeConfig) -> None:
    import uvicorn  # deferred: the server only; --help must stay fast

    settings: ServeConfig = cfg if isinstance(cfg, ServeConfig) else to_settings(cfg, ServeConfig)
    server = settings.server
    references = ReferencePreparer(settings.reference, settings.asr, settings.speaker)  # one set of models for uploads and synthesis
    app, engine = build(settings, transcribe=upload_transcriber(settings, references), references=references)
    config = uvicorn.Config(app, host=server.host, port=server.port, log_config=None, log_level=server.log_level,
                            timeout_graceful_shutdown=server.shutdown_timeout, lifespan="off")
    web = uvicorn.Server(config)

    def load() -> None:
        try:
            load_into(engine, settings, references)
        except BaseException as error:  # reported after the server stops, as the exit status
            engine.load_error = error
            web.should_exit = True

    threading.Thread(target=load, name="f5app-load", daemon=True).start()
    log.info("listening on http://%s:%d (the page is at /, the API at /v1; auth %s)",
             server.host, server.port, "on" if api_key_for(server) else "off (loopback only)")
    try:
        with signals_end_the_server_cleanly():
            web.run()
    except SystemExit:  # uvicorn exits 1 when it cannot bind; say why in one line
        raise ServeSettingsError(
            f"cannot listen on {server.host}:{server.port} (in use, or not an address of this machine); choose server.port=..."
        ) from None
    finally:
        engine.close(timeout=server.shutdown_timeout)
    if engine.load_error is not None:
        raise engine.load_error
    if not web.started:
        raise ServeSettingsError(f"cannot listen on {server.host}:{server.port}; choose another server.port=...")
    log.info("stopped")


@hydra.main(config_path=str(CONF_DIR), config_name="serve", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        run(cfg)


USAGE = "usage: python -m f5app.serve [run_name=NAME] [ckpt=auto|best|last|latest|custom|pretrained] [server.host=127.0.0.1] [server.port=8000] [key=value ...]"


#: Values taken as typed (commas, quotes, brackets), as f5app.infer does for its transcripts.
FREE_TEXT_KEYS = ("ref_text", "voices.*.ref_text")


def main() -> None:
    # As f5app.infer: idle OpenMP threads spinning made sampling ~10x slower on a busy CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    defer_unused_imports()
    run_hydra_app(_hydra_main, "serve", USAGE, free_text_keys=FREE_TEXT_KEYS)


if __name__ == "__main__":
    sys.exit(main())
