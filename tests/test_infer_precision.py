"""Every dtype samples at every step count: the ODE stays fp32, only the DiT runs in the chosen dtype.

Upstream's ``CFM.sample`` builds its time grid in the model's dtype; in bf16 the steps near t = 1
collide at 16 and 32 steps and torchdiffeq stops. f5app's sampler (f5app/inference/sampling.py)
equals upstream's in fp32 and keeps working in bf16 and fp16.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from f5app.inference.errors import InferenceInputError
from f5app.inference.precision import prepare_network
from f5app.inference.sampling import sample, time_grid
from f5app.inference.synthesizer import Synthesizer
from infer_fixtures import UPSTREAM_REF_TEXT, tiny_cfm_and_ema, upstream_ref_wav
from test_infer_synthesizer import infer_config, run_dir  # noqa: F401 (run_dir is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cfm_and_reference():
    from f5app.audio.io import read_audio

    cfm, _ = tiny_cfm_and_ema(seed=0, train_steps=2)
    wav, _ = read_audio(upstream_ref_wav(), target_sr=24000)
    return cfm.eval(), torch.from_numpy(wav[: 24000])[None]


def copy_of(cfm):
    """A deep copy (upstream's DiT keeps a thread-local text cache, which cannot be copied, after sampling)."""
    cfm.transformer.__dict__.pop("_cache_local", None)
    return copy.deepcopy(cfm)


TEXT = [list("Some call me nature. Hello there.")]


@pytest.mark.parametrize("steps", [7, 16, 32])
def test_in_fp32_the_sampler_equals_upstreams_cfm_sample(cfm_and_reference, steps):
    cfm, audio = cfm_and_reference
    with torch.inference_mode():
        theirs, _ = cfm.sample(cond=audio, text=TEXT, duration=160, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)
        ours = sample(cfm, audio, TEXT, 160, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seeds=[3])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_upstream_bf16_crashes_at_32_steps_where_the_fp32_grid_holds(cfm_and_reference):
    cfm, audio = cfm_and_reference
    half = copy_of(cfm).to(torch.bfloat16)
    with torch.inference_mode(), pytest.raises(AssertionError, match="strictly increasing"):
        half.sample(cond=audio, text=TEXT, duration=160, steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)
    grid = time_grid(32, -1.0, "cpu")
    assert grid.dtype == torch.float32 and bool((grid.diff() > 0).all()) and len(grid) == 33


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("steps", [7, 16, 32])
def test_half_precision_sampling_stays_near_fp32_at_every_step_count(cfm_and_reference, dtype, steps):
    cfm, audio = cfm_and_reference
    half = copy_of(cfm)
    network = prepare_network(half, dtype, "cpu")
    with torch.inference_mode():
        full = sample(cfm, audio, TEXT, 160, steps=steps, seeds=[3])
        low = sample(half, audio, TEXT, 160, steps=steps, seeds=[3], network=network)
    assert next(half.transformer.parameters()).dtype == dtype and low.dtype == torch.float32
    relative = float((low - full).norm() / full.norm())
    assert relative < 0.05, relative


def test_int8_quantised_linears_stay_near_fp32(cfm_and_reference):
    cfm, audio = cfm_and_reference
    quantised = copy_of(cfm)
    network = prepare_network(quantised, torch.float32, "cpu", quantize="int8")
    with torch.inference_mode():
        full = sample(cfm, audio, TEXT, 160, steps=7, seeds=[3])
        low = sample(quantised, audio, TEXT, 160, steps=7, seeds=[3], network=network)
    assert type(quantised.transformer.transformer_blocks[0].attn.to_q).__name__ == "Linear"
    assert type(quantised.transformer.transformer_blocks[0].attn.to_q).__module__.startswith("torch.ao.nn.quantized")
    assert float((low - full).norm() / full.norm()) < 0.05


def test_int8_needs_fp32_on_the_cpu(cfm_and_reference):
    cfm, _ = cfm_and_reference
    with pytest.raises(InferenceInputError, match="dtype=fp32"):
        prepare_network(copy_of(cfm), torch.bfloat16, "cpu", quantize="int8")
    with pytest.raises(InferenceInputError, match="none or int8"):
        prepare_network(copy_of(cfm), torch.float32, "cpu", quantize="int4")


@pytest.mark.parametrize(("dtype", "nfe_step"), [
    ("bf16", 7), ("bf16", 16), ("bf16", 32), ("fp16", 7), ("fp16", 16),
    pytest.param("fp16", 32, marks=pytest.mark.slow),  # fp16 has no fast CPU matmul: ~9 s even at this size
])
def test_infer_speaks_in_half_precision_at_every_step_count(run_dir, dtype, nfe_step):  # noqa: F811
    synth = Synthesizer.from_config(infer_config(run_dir, dtype=dtype, nfe_step=nfe_step), run_dir)
    result = synth.generate("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert result.wav.dtype == np.float32 and np.isfinite(result.wav).all() and result.wav.size > 0
    assert np.isfinite(result.mel).all()


def test_step_presets_set_nfe_step_and_unknown_names_are_refused(run_dir):  # noqa: F811
    synth = Synthesizer.from_config(infer_config(run_dir, steps="fast"), run_dir)
    assert synth.settings.nfe_step == 7
    with pytest.raises(InferenceInputError, match="fast, balanced, quality"):
        Synthesizer.from_config(infer_config(run_dir, steps="fastest"), run_dir)
