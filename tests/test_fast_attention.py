"""The inference attention (f5app/inference/fast_attention.py) computes what upstream's DiT computes.

In fp32 a prepared DiT's output equals upstream's at the same weights within rounding, with and
without padding, with masked attention, and with rotary on one head only (v0's ``pe_attn_head``).
In bf16 its rotary angles are right at every frame, where upstream's, once the DiT is cast, are
off by radians past frame 256, so it stays near fp32 where upstream's cast DiT drifts. Training never sees it:
``prepare_network`` acts on the copy it is handed, nothing under f5app/training calls it, and
training's evaluation installs it only while it speaks (``installed``), as f5app.eval will speak.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from f5app.inference import fast_attention
from f5app.inference.precision import prepare_network
from f5app.inference.sampling import sample
from f5app.inference.upstream_import import register_lazy_f5_model_package
from f5app.model import build_cfm
from infer_fixtures import TINY_VOCAB, tiny_model_config, upstream_ref_wav

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_cfm(std=0.2, **arch):
    """A tiny CFM(DiT) with every weight drawn (upstream zero-initialises AdaLN and the output layer)."""
    register_lazy_f5_model_package()
    config = tiny_model_config()
    config = replace(config, arch=replace(config.arch, **arch))
    torch.manual_seed(0)
    cfm = build_cfm(config, TINY_VOCAB)
    with torch.no_grad():
        for param in cfm.transformer.parameters():
            param.normal_(0, std)
    return cfm.eval()


def inputs(frames=(300, 220)):
    """A batch of two items of different lengths (the second padded), with their mask."""
    torch.manual_seed(1)
    batch, longest = len(frames), max(frames)
    mask = torch.arange(longest)[None, :] < torch.tensor(frames)[:, None]
    x, cond = torch.randn(batch, longest, 100), torch.randn(batch, longest, 100)
    text = torch.randint(0, len(TINY_VOCAB), (batch, 40))
    return x, cond, text, mask


def forward(transformer, x, cond, text, mask, dtype=torch.float32):
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return transformer(x=x.to(dtype), cond=cond.to(dtype), text=text, time=torch.tensor(0.4), mask=mask,
                           cfg_infer=True, cache=False).float()


def relative(ours, theirs):
    """|ours - theirs| / |theirs| (Frobenius): elementwise tolerances trip on the outputs' near-zero elements."""
    return float((ours - theirs).norm() / theirs.norm())


def prepared(cfm, dtype=torch.float32):
    ours = copy.deepcopy(cfm)
    prepare_network(ours, dtype, "cpu")
    return ours.transformer


@pytest.mark.parametrize("padded", [False, True], ids=["one-length", "padded-batch"])
@pytest.mark.parametrize("arch", [{}, {"attn_mask_enabled": True}, {"pe_attn_head": 1, "text_mask_padding": False}],
                         ids=["v1", "masked-attention", "v0-rotary-on-one-head"])
def test_in_fp32_the_prepared_dit_equals_upstreams(arch, padded):
    cfm = random_cfm(**arch)
    x, cond, text, mask = inputs()
    if not padded:
        x, cond, text, mask = x[:1], cond[:1], text[:1], None
    ours = prepared(cfm)
    assert type(ours.transformer_blocks[0].attn.processor) is fast_attention.InferenceAttnProcessor
    theirs = forward(cfm.transformer, x, cond, text, mask)
    assert relative(forward(ours, x, cond, text, mask), theirs) < 1e-5  # measured 1.2e-6: fp32 rounding (fused multiply-add)


def test_in_bf16_the_prepared_dit_stays_near_fp32_where_upstreams_cast_dit_drifts():
    cfm = random_cfm()  # weights of std 0.2: attention sharp enough that positions matter
    x, cond, text, mask = inputs(frames=(900, 700))
    full = forward(cfm.transformer, x, cond, text, mask)
    ours = forward(prepared(cfm, torch.bfloat16), x, cond, text, mask, torch.bfloat16)
    theirs = forward(copy.deepcopy(cfm.transformer).to(torch.bfloat16), x, cond, text, mask, torch.bfloat16)
    # measured 0.05-0.06 against 0.40 for upstream's cast DiT (its rotary angles, below); with weights of
    # std 0.02, where attention is near uniform, both are 0.0055 (bf16 keeps 8 mantissa bits: 2^-8 = 0.0039)
    assert relative(ours, full) < 0.1, relative(ours, full)
    assert relative(theirs, full) > 3 * relative(ours, full)


def test_the_rotary_angles_stay_right_in_bf16_where_upstreams_cast_ones_drift():
    from x_transformers.x_transformers import RotaryEmbedding

    exact, _ = RotaryEmbedding(64).forward_from_seq_len(900)
    cast = RotaryEmbedding(64).to(torch.bfloat16)  # what casting the DiT does to upstream's buffer
    drifted, _ = cast.forward_from_seq_len(900)
    assert float((drifted.float().cos() - exact.cos()).abs().max()) > 1.0  # positions past 256 rounded in bf16
    tables, _ = fast_attention.RotaryTables(cast.inv_freq).forward_from_seq_len(900)
    assert tables.cos.dtype == torch.bfloat16
    assert float((tables.cos.float()[0, :, 0] - exact.cos()[0]).abs().max()) < 0.004  # bf16 rounding of cos only
    assert float((tables.signed_sin.float()[0, :, 0, 1::2] - exact.sin()[0, :, 1::2]).abs().max()) < 0.004


def test_sampling_with_the_prepared_dit_equals_upstreams_cfm_sample_in_fp32():
    from f5app.audio.io import read_audio

    # std 0.05: at 0.2 this random net is chaotic, and seven guided steps grow fp32 rounding (1e-6) to 1e-3
    cfm = random_cfm(std=0.05)
    wav, _ = read_audio(upstream_ref_wav(), target_sr=24000)
    audio, text = torch.from_numpy(wav[:24000])[None], [list("Some call me nature. Hello there.")]
    ours = copy.deepcopy(cfm)
    network = prepare_network(ours, torch.float32, "cpu")
    with torch.inference_mode():
        theirs, _ = cfm.sample(cond=audio, text=text, duration=160, steps=7, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)
        mine = sample(ours, audio, text, 160, steps=7, cfg_strength=2.0, sway_sampling_coef=-1.0, seeds=[3], network=network)
    assert relative(mine, theirs) < 1e-5  # measured 4e-8


def test_prepare_network_changes_only_the_copy_it_is_given_and_keeps_the_state_dict():
    cfm = random_cfm()
    before = {k: v.clone() for k, v in cfm.state_dict().items()}
    ours = copy.deepcopy(cfm)
    prepare_network(ours, torch.bfloat16, "cpu")
    prepare_network(ours, torch.bfloat16, "cpu")  # again: nothing more happens
    assert type(cfm.transformer.rotary_embed).__name__ == "RotaryEmbedding"
    assert {type(b.attn.processor).__name__ for b in cfm.transformer.transformer_blocks} == {"AttnProcessor"}
    after = cfm.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert ours.state_dict().keys() == before.keys()  # the inference copy still saves and loads as upstream's


def test_training_never_prepares_a_network_and_installs_the_attention_only_while_it_evaluates():
    training = Path(fast_attention.__file__).resolve().parent.parent / "training"
    sources = {path.name: path.read_text() for path in training.rglob("*.py")}
    assert sources, training
    assert not [name for name, text in sources.items() if "prepare_network" in text]
    assert [name for name, text in sources.items() if "fast_attention" in text] == ["evaluation.py"]
    assert "fast_attention.installed(" in sources["evaluation.py"] and "fast_attention.install(" not in sources["evaluation.py"]


def test_installed_speaks_as_a_prepared_copy_and_gives_upstreams_modules_back():
    cfm = random_cfm(std=0.05)
    rotary, processors = cfm.transformer.rotary_embed, [b.attn.processor for b in cfm.transformer.transformer_blocks]
    before = {k: v.clone() for k, v in cfm.state_dict().items()}
    prepared = copy.deepcopy(cfm)
    network = prepare_network(prepared, torch.float32, "cpu")
    audio, text = torch.randn(1, 24000) * 0.1, [list("Some call me nature.")]
    with torch.inference_mode():
        expected = sample(prepared, audio, text, 120, steps=3, cfg_strength=2.0, sway_sampling_coef=-1.0, seeds=[5], network=network)
        with fast_attention.installed(cfm.transformer) as active:
            assert active and type(cfm.transformer.rotary_embed) is fast_attention.RotaryTables
            spoken = sample(cfm, audio, text, 120, steps=3, cfg_strength=2.0, sway_sampling_coef=-1.0, seeds=[5], network=network)
    assert torch.equal(spoken, expected)  # bit for bit: training's evaluation scores what f5app.eval scores
    assert cfm.transformer.rotary_embed is rotary
    assert [b.attn.processor for b in cfm.transformer.transformer_blocks] == processors
    after = cfm.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_installed_gives_the_modules_back_when_the_block_raises():
    cfm = random_cfm()
    rotary = cfm.transformer.rotary_embed
    with pytest.raises(RuntimeError, match="stop"):
        with fast_attention.installed(cfm.transformer):
            raise RuntimeError("stop")
    assert cfm.transformer.rotary_embed is rotary
    assert {type(b.attn.processor).__name__ for b in cfm.transformer.transformer_blocks} == {"AttnProcessor"}


def test_other_backbones_keep_upstreams_attention():
    from f5_tts.model.backbones.unett import UNetT

    unet = UNetT(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, text_num_embeds=len(TINY_VOCAB), mel_dim=100)
    assert fast_attention.install(unet) is False
    assert type(unet.rotary_embed).__name__ == "RotaryEmbedding"
