"""``--help`` for the Hydra entry points without Hydra's config-group scan.

Hydra builds its help by listing every config group, deep-copying the whole config store each
time (about 1.5 s here, most of a ``--help``). The page below has the same two sections, the
groups of this config with their options and the composed config (command-line overrides
applied), in a fraction of the time. ``--hydra-help`` is still Hydra's own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from omegaconf import OmegaConf, open_dict

from f5app.config import CONF_DIR
from f5app.hydra_setup import register

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def help_text(config_name: str, app: str, argv: Sequence[str], usage: str) -> str:
    from hydra import compose, initialize_config_dir

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


def run_hydra_app(hydra_main: Callable[[], object], config_name: str, usage: str) -> None:
    """An entry point's ``main()``: register the schemas and resolvers, answer ``--help`` fast, else run Hydra."""
    register()
    if wants_help(sys.argv[1:]):
        print(help_text(config_name, f"f5app.{config_name}", sys.argv[1:], usage))
        return
    hydra_main()
