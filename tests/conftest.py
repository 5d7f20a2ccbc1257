"""Shared test setup: offline Hub, registered config schemas, composing configs in-process."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# Converted-weights cache (f5app.ckpt.adapt.adapt_cached): never the user's ~/.cache in tests.
os.environ.setdefault("F5APP_CACHE_DIR", tempfile.mkdtemp(prefix="f5app-test-cache-"))

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from f5app.config import CONF_DIR  # noqa: E402
from f5app.hydra_setup import register  # noqa: E402

register()


@pytest.fixture
def compose_cfg():
    """compose_cfg("train", ["experiment=demo", ...]) -> DictConfig, as the entry point would see it."""

    def _compose(config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)

    return _compose


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two torch threads on two cores shared with other jobs run up to 10x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Fixtures whose setup alone is slow by the suite's rule (trains more than a few updates, or starts
#: a server): every test that uses one is marked slow here, so ``-m "not slow"`` stays a suite people
#: run before each commit. Keyed by test file, since fixture names repeat across files.
SLOW_FIXTURES = {
    "test_serve.py": {"server", "serve_with"},  # a real uvicorn server on a loopback port
    "test_lora.py": {"runs"},  # trains a base and four LoRA runs
}


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 (pytest's hook signature)
    for item in items:
        slow = SLOW_FIXTURES.get(item.path.name, set())
        if slow & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
