"""What Hydra needs before it composes an f5app config: the schemas and every resolver the YAML uses.

``config.py`` registers the schemas and its own resolver; resolvers that belong to a feature
module are registered here, so the config layer imports no feature module. Every entry point
(through ``cli_help.run_hydra_app``) and the tests call :func:`register`.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from f5app.config import register_configs
from f5app.sweep import JOB_DIRNAME_RESOLVER, job_dirname


def register() -> None:
    """Idempotent: safe to call from every entry point and test."""
    register_configs()
    # conf/train.yaml's hydra.sweep.subdir: one deterministic folder name per sweep job.
    OmegaConf.register_new_resolver(JOB_DIRNAME_RESOLVER, job_dirname, replace=True)
