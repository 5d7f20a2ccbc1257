"""``python -m f5app.studio`` (= ``f5app-studio``): the studio over output_root (Hydra entry, thin).

    python -m f5app.studio                                  # http://127.0.0.1:8100 over outputs/
    python -m f5app.studio output_root=outputs 'data_roots=[~/my_voice]' server.port=8101

The ``server.*`` keys, binding, key and origin rules are f5app.serve's: loopback without a key,
any other address only with ``server.api_key`` or ``$F5APP_API_KEY``. Ctrl-C or SIGTERM stops
the studio and sends SIGTERM to a training it started (which saves and exits 3).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, StudioConfig, to_settings
from f5app.errors import UserError, exit_on_user_error
from f5app.serving.listen import api_key_for, signals_end_the_server_cleanly

log = logging.getLogger("f5app.studio")


def run(cfg: DictConfig | StudioConfig) -> None:
    import uvicorn  # deferred: the server only; --help must stay fast

    from f5app.studio.app import create_app  # deferred: f5app.studio.app imports fastapi (~1 s); --help must stay fast

    settings: StudioConfig = cfg if isinstance(cfg, StudioConfig) else to_settings(cfg, StudioConfig)
    server = settings.server
    api_key = api_key_for(server)
    app, studio = create_app(settings, api_key=api_key)
    web = uvicorn.Server(uvicorn.Config(app, host=server.host, port=server.port, log_config=None, log_level=server.log_level,
                                        timeout_graceful_shutdown=server.shutdown_timeout, lifespan="off"))
    log.info("studio on http://%s:%d over %s (auth %s)", server.host, server.port, studio.roots.output_root,
             "on" if api_key else "off (loopback only)")
    try:
        with signals_end_the_server_cleanly():
            web.run()
    except SystemExit:
        raise UserError(f"cannot listen on {server.host}:{server.port} (in use?); choose server.port=...") from None
    finally:
        studio.jobs.close(timeout=server.shutdown_timeout)
    if not web.started:
        raise UserError(f"cannot listen on {server.host}:{server.port}; choose another server.port=...")


@hydra.main(config_path=str(CONF_DIR), config_name="studio", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        run(cfg)


USAGE = "usage: python -m f5app.studio [output_root=outputs] ['data_roots=[DIR,...]'] [server.host=127.0.0.1] [server.port=8100]"


def main() -> None:
    run_hydra_app(_hydra_main, "studio", USAGE)


if __name__ == "__main__":
    sys.exit(main())
