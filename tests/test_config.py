"""Every config group option composes into the typed settings, and the entry points behave as Hydra apps."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from f5app.config import CONF_DIR, InferConfig, TrainConfig, to_settings


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# ckpt=custom needs ckpt.path and data=csv_wavs|recordings need data.path: give every option what it needs.
TRAIN_BASE = ["data.path=/data/voice", "ckpt.path=/weights/model.pt"]


@pytest.mark.parametrize("group", ["model", "data", "optim", "trainer", "logger", "ckpt", "vocoder", "experiment"])
def test_every_training_option_composes_into_typed_settings(compose_cfg, group):
    for option in options(group):
        overrides = [f"{group}={option}", *TRAIN_BASE]
        if group == "data" or group == "experiment":
            overrides = [f"{group}={option}", "ckpt.path=/weights/model.pt"] + (["data.path=/data/voice"] if option in ("csv_wavs", "recordings") else [])
        settings = to_settings(compose_cfg("train", overrides), TrainConfig)
        assert isinstance(settings, TrainConfig), f"{group}={option}"


@pytest.mark.parametrize("group", ["model", "ckpt", "vocoder"])
def test_every_inference_option_composes_into_typed_settings(compose_cfg, group):
    for option in options(group):
        cfg = compose_cfg("infer", [f"{group}={option}", "ckpt.path=/weights/model.pt", "text=hello"])
        assert isinstance(to_settings(cfg, InferConfig), InferConfig), f"{group}={option}"


def test_upstream_architectures_are_exact(compose_cfg):
    base = to_settings(compose_cfg("train", ["model=f5tts_v1_base", *TRAIN_BASE]), TrainConfig).model.arch
    small = to_settings(compose_cfg("train", ["model=f5tts_v1_small", *TRAIN_BASE]), TrainConfig).model.arch
    assert (base.dim, base.depth, base.heads, base.ff_mult, base.text_dim, base.conv_layers) == (1024, 22, 16, 2, 512, 4)
    assert (small.dim, small.depth, small.heads, small.ff_mult, small.text_dim, small.conv_layers) == (768, 18, 12, 2, 512, 4)


def test_the_ckpt_group_sets_the_chains(compose_cfg):
    def chains(option):
        ckpt = to_settings(compose_cfg("train", [f"ckpt={option}", *TRAIN_BASE]), TrainConfig).ckpt
        return ckpt.train_chain, ckpt.infer_chain

    assert chains("auto") == (["resume", "custom", "pretrained", "scratch"], ["custom", "best", "last", "latest", "pretrained"])
    assert chains("best") == (["best"], ["best"])
    assert chains("custom") == (["custom"], ["custom"])
    assert "resume" not in chains("best")[0]


def test_demo_experiment_is_tiny_on_bundled_data_and_may_start_from_scratch(compose_cfg):
    settings = to_settings(compose_cfg("train", ["experiment=demo"]), TrainConfig)
    assert settings.model.name == "tiny" and settings.run_name == "demo"
    assert (CONF_DIR.parent / "f5app" / "assets" / "demo" / "metadata.csv").samefile(f"{settings.data.path}/metadata.csv")
    assert settings.ckpt.allow_scratch and "pretrained" not in settings.ckpt.train_chain


def test_run_directory_is_stable_and_named_after_the_run(compose_cfg):
    cfg = compose_cfg("train", ["experiment=demo"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "outputs/runs/demo"
    cfg = compose_cfg("train", ["experiment=demo", "run_name=my_voice"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "outputs/runs/my_voice"


def test_a_misspelt_key_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="optim.lrr"):
        compose_cfg("train", ["optim.lrr=1", *TRAIN_BASE])


def test_a_wrongly_typed_value_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="max_updates"):
        compose_cfg("train", ["trainer.max_updates=many", *TRAIN_BASE])


def test_a_missing_data_path_is_named(compose_cfg):
    cfg = compose_cfg("train", [])
    assert OmegaConf.is_missing(cfg.data, "path")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["f5app-train", "f5app-infer", "f5app-ckpt", "f5app-prepare", "f5app-report"])
def test_console_scripts_answer_help(script):
    exe = subprocess.run([sys.executable, "-c", "import shutil,sys; print(shutil.which(sys.argv[1]) or '')", script], capture_output=True, text=True).stdout.strip()
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    path = exe or str(bin_dir / script)
    done = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower() or "== Config ==" in done.stdout or "Powered by Hydra" in done.stdout


@pytest.mark.slow
def test_train_cfg_job_prints_the_composed_config():
    done = subprocess.run([sys.executable, "-m", "f5app.train", "experiment=demo", "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "run_name: demo" in done.stdout and "name: tiny" in done.stdout


def test_help_lists_each_group_with_its_options_and_the_composed_config():
    from f5app.cli_help import help_text, wants_help

    assert wants_help(["experiment=demo", "--help"]) and not wants_help(["text=--"])
    page = help_text("train", "f5app.train", ["experiment=demo", "optim.lr=0.5", "--help"], "usage: ...")
    assert "model: e2tts_base, e2tts_small, f5tts_base, f5tts_small, f5tts_v1_base, f5tts_v1_small, tiny   [now: tiny]" in page
    assert "ckpt: auto, best, custom, last, latest, pinned, pretrained   [now: auto]" in page
    assert "_schema" not in page
    assert "lr: 0.5" in page and "run_name: demo" in page


def test_a_recorded_model_tree_rebuilds_the_same_model_config(compose_cfg):
    from dataclasses import asdict

    from f5app.config import model_config_from_dict

    model = to_settings(compose_cfg("train", ["model=f5tts_v1_small", *TRAIN_BASE]), TrainConfig).model
    assert model_config_from_dict(asdict(model)) == model
    with pytest.raises(TypeError):
        model_config_from_dict({**asdict(model), "arch": {"dimm": 3}})
