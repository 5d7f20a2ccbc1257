"""The Hydra entry points' shared ``main()``: free text taken literally, a fast ``--help``, exit statuses.

Hydra builds its help by listing every config group, deep-copying the whole config store each
time (about 1.5 s here, most of a ``--help``). The page below has the same two sections, the
groups of this config with their options and the composed config (command-line overrides
applied), in a fraction of the time. ``--hydra-help`` is still Hydra's own.

Hydra prints a config error (an unknown key, a bad value, a missing option) and exits 1, the
status of a crash; here such errors reach :func:`f5app.errors.run_entry_point` and exit 2, bad
input, like every other mistake the user can fix.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from f5app.config import CONF_DIR
from f5app.errors import run_entry_point
from f5app.free_text import literal_overrides
from f5app.hydra_setup import register

#: Errors in composing the config from the command line: bad input (exit 2), not a crash.
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def help_text(config_name: str, app: str, argv: Sequence[str], usage: str) -> str:
    overrides = [arg for arg in argv if arg not in HELP_FLAGS and not arg.startswith("-")]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    choices = {group: choice for group, choice in cfg.hydra.runtime.choices.items() if not group.startswith("hydra/")}
    for group in ("hydra/launcher",):
        if (CONF_DIR / group).is_dir():
            choices[group] = cfg.hydra.runtime.choices.get(group)
    lines = [f"{app} is powered by Hydra.", "", usage, "", "== Configuration groups ==", "Compose your configuration from those groups (group=option)", ""]
    for group in sorted(choices):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        if options:
            lines.append(f"{group}: {', '.join(options)}   [now: {choices[group]}]")
    with open_dict(cfg):
        del cfg["hydra"]
    lines += ["", "== Config ==", "Override anything in the config (foo.bar=value)", "", OmegaConf.to_yaml(cfg)]
    lines += ["Use --hydra-help to view Hydra specific help"]
    return "\n".join(lines)


def run_hydra_app(hydra_main: Callable[[], object], config_name: str, usage: str, free_text_keys: Sequence[str] = ()) -> None:
    """An entry point's ``main()``: register the schemas and resolvers, take the values of
    ``free_text_keys`` literally (f5app/free_text.py), answer ``--help`` fast, else run Hydra; a
    status other than 0 leaves through SystemExit."""
    register()
    sys.argv[1:] = literal_overrides(sys.argv[1:], free_text_keys)
    app = f"f5app.{config_name}"

    def body() -> None:
        if wants_help(sys.argv[1:]):
            print(help_text(config_name, app, sys.argv[1:], usage))
            return
        with _config_errors_raised():
            hydra_main()

    status = run_entry_point(app, body, bad_input=CONFIG_ERRORS)
    if status:
        raise SystemExit(status)


@contextlib.contextmanager
def _config_errors_raised() -> Iterator[None]:
    """Hydra re-raises instead of printing and exiting 1 when HYDRA_FULL_ERROR=1."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
