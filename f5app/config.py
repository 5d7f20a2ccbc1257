"""Typed settings: the one place where Hydra's DictConfig becomes plain Python objects.

Every key of every config group has a type and a default here. The YAML files in ``conf/``
only choose values; the dataclasses below are registered in Hydra's ConfigStore as schemas so a
typo (``optim.lrr=1``) or a wrong type (``trainer.max_updates=abc``) fails at composition time.

Code outside the entry points never sees a DictConfig: it receives the dataclasses returned by
:func:`to_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent
#: The YAML config tree: the repository's ``conf/``, which an installed wheel carries as
#: ``f5app/_conf`` (setup.py maps it in); a checkout, editable installs included, has only ``conf/``.
CONF_DIR = _PACKAGE_DIR / "_conf" if (_PACKAGE_DIR / "_conf").is_dir() else _PACKAGE_DIR.parent / "conf"
#: Small files shipped with the package (the demo data set).
ASSETS_DIR = _PACKAGE_DIR / "assets"


@dataclass
class MelConfig:
    """Mel-spectrogram front end; must match the vocoder the model is paired with."""

    target_sample_rate: int = 24000
    n_mel_channels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024
    mel_spec_type: str = "vocos"  # vocos | bigvgan


@dataclass
class ArchConfig:
    """The backbone's constructor arguments (upstream ``f5_tts.model.DiT``, or ``UNetT`` for
    E2-TTS: it takes the same ones except ``checkpoint_activations``; upstream's E2 configs leave
    ``text_dim`` unset, which UNetT reads as ``mel_dim``, and ``conv_layers`` at 0)."""

    dim: int = 1024
    depth: int = 22
    heads: int = 16
    ff_mult: int = 2
    text_dim: int = 512
    text_mask_padding: bool = True
    qk_norm: Optional[str] = None
    conv_layers: int = 4
    pe_attn_head: Optional[int] = None
    attn_backend: str = "torch"
    attn_mask_enabled: bool = False
    # Recompute each block's activations in the backward pass (upstream's torch.utils.checkpoint):
    # less memory, one more forward of compute; the weights learned are the same.
    checkpoint_activations: bool = False


@dataclass
class ModelConfig:
    name: str = "f5tts_v1_base"
    backbone: str = "DiT"
    arch: ArchConfig = field(default_factory=ArchConfig)
    mel: MelConfig = field(default_factory=MelConfig)


@dataclass
class ReplayConfig:
    """One entry of ``data.replay``: a further set mixed into every training batch against
    forgetting (f5app/data/replay.py, docs/training.md)."""

    path: Optional[str] = None  # a folder holding metadata.csv: a csv_wavs folder, or data=recordings' clips (or the folder they were cut from)
    share: float = 0.2  # of every training batch's mel frames, in (0, 0.9]; all entries together below 1
    prepared_dir: Optional[str] = None  # default: <path>/.f5app_prepared
    language: Optional[str] = None  # its text_norm language when text_norm.apply_to_training (default: text_norm.language, else en)


@dataclass
class DataConfig:
    """A folder of audio plus ``metadata.csv``, prepared into upstream's arrow format."""

    name: str = "csv_wavs"
    path: str = MISSING  # folder holding metadata.csv (and the audio it names)
    tokenizer: str = "char"  # char | pinyin | custom
    vocab_path: Optional[str] = None  # tokenizer=custom: a vocab.txt, one token per line
    prepared_dir: Optional[str] = None  # default: <data.path>/.f5app_prepared
    min_duration: float = 0.3  # seconds; shorter clips are reported and skipped
    max_duration: float = 30.0  # seconds; longer clips are reported and skipped
    val_fraction: float = 0.1
    val_min_items: int = 1
    frames_per_gpu: int = 38400  # dynamic batch budget in mel frames per process
    max_samples: int = 64  # cap on clips in one batch
    num_workers: int = 0
    seed: int = 0  # shuffling of the train/validation split
    # Further sets, each a share of every training batch: 'data.replay=[{path: DIR, share: 0.2}]'
    replay: list[ReplayConfig] = field(default_factory=list)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adamw8bit (bitsandbytes' AdamW8bit, upstream's bnb_optimizer)
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_updates: int = 200
    decay: str = "linear"  # linear | cosine | constant (after warmup)
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    grad_accumulation_steps: int = 1


@dataclass
class TrainerConfig:
    max_updates: int = 10000
    epochs: int = 100  # both bounds apply: training stops at whichever comes first
    save_every: int = 500
    val_every: int = 250
    sample_every: int = 1000
    log_every: int = 10
    seed: int = 666
    deterministic: bool = False
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16: GPU only)
    ema_decay: float = 0.9999
    ema_update_after: int = 0
    async_save: bool = True
    on_save_error: str = "stop"  # stop | warn
    progress_bar: bool = True
    cpu: bool = False  # force CPU even where an accelerator exists
    # Updates whose loss or gradient norm is NaN/inf are skipped (as a grad scaler does); this many
    # in a row stop training with exit status 1. 0 never stops.
    max_nonfinite: int = 25


#: LoRA's default targets in upstream's DiT (f5_tts/model/modules.py): each block's attention
#: projections (Attention.to_q/to_k/to_v/to_out[0]) and feed-forward linears (FeedForward.ff[0][0],
#: ff[2]). AdaLN (attn_norm.linear, norm_out.linear) and the zero-initialised proj_out stay frozen:
#: see docs/lora.md for why.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.ff.0.0", "ff.ff.2")


@dataclass
class FinetuneConfig:
    """How fine-tuning changes the weights: ``full`` (every weight) or ``lora`` (low-rank adapters
    through peft, plus the text-embedding rows of new tokens; docs/lora.md)."""

    name: str = "full"  # full | lora
    rank: int = 16  # lora: rank r of each adapter
    alpha: float = 32.0  # lora: scale alpha / r on the adapter's output
    dropout: float = 0.0  # lora: dropout on the adapter's input
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # lora: module-name suffixes


@dataclass
class LoggerConfig:
    name: str = "tensorboard"  # tensorboard | wandb | none
    project: str = "f5app"


@dataclass
class CkptConfig:
    """Which weights load. ``train_chain``/``infer_chain`` are tried in order; see docs/checkpoints.md.

    Sources: ``resume`` (newest complete training state of this run), ``best``, ``last``,
    ``latest`` (newest numbered checkpoint), ``custom`` (``path``), ``pretrained`` (the Hub),
    ``scratch`` (random init; training only, needs ``allow_scratch``).
    """

    name: str = "auto"
    train_chain: list[str] = field(default_factory=lambda: ["resume", "custom", "pretrained", "scratch"])
    infer_chain: list[str] = field(default_factory=lambda: ["custom", "best", "last", "latest", "pretrained"])
    path: Optional[str] = None
    run_dir: Optional[str] = None  # where best/last/latest/resume look; default: this run's dir
    repo_id: str = "SWivid/F5-TTS"
    filename: str = "F5TTS_v1_Base/model_1250000.safetensors"
    vocab_filename: Optional[str] = "F5TTS_v1_Base/vocab.txt"
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    allow_scratch: bool = False
    quarantine: bool = True
    fallback: bool = False  # an explicitly requested source that is invalid falls through
    keep_last: int = 3
    best_metric: str = "val_loss"  # what best.json ranks by: val_loss | wer | cer (lower wins) | sim (higher wins); METRIC@SET: one of eval.sets
    # A checkpoint whose wer@base_set rose more than max_base_wer_rise (absolute) over the run's first
    # evaluation is never best (null: no such bound). Here, not in eval: ckpt=best applies it too.
    base_set: Optional[str] = None
    max_base_wer_rise: float = 0.05
    min_size_bytes: int = 1024  # lower bound when a file has no metadata recording its size
    use_ema: bool = True
    # An adapter checkpoint's base weights, moved from where its metadata records them (checked by fingerprint).
    base_path: Optional[str] = None
    # Load an adapter checkpoint whose record names no base fingerprint (or predates adapter.json):
    # nothing then proves the base is the one it was trained on.
    trust_base: bool = False


@dataclass
class VocoderConfig:
    """One option of the vocoder group; ``name`` is a vocoder registered in f5app.audio.vocoder."""

    name: str = "griffinlim"  # griffinlim | vocos | bigvgan
    repo_id: Optional[str] = None  # Hub weights; None: the vocoder's own default_repo
    local_path: Optional[str] = None  # a folder laid out as the vocoder's Hub repository
    n_iter: int = 32  # griffinlim iterations
    options: dict[str, Any] = field(default_factory=dict)  # settings of a vocoder that has no field here


@dataclass
class AsrConfig:
    """Speech recognition for evaluation (faster-whisper); see f5app/speech/asr.py."""

    name: str = "whisper"  # whisper (asr.model: a Hub id, a faster-whisper size name, or a folder) | tiny_en (bundled)
    model: str = "large-v3"
    revision: Optional[str] = None  # Hub branch, tag or commit
    cache_dir: Optional[str] = None  # Hub cache; default HF_HUB_CACHE / ~/.cache/huggingface/hub
    language: Optional[str] = None  # e.g. en; null: detected from the audio
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str = "auto"  # auto (int8 on CPU, float16 on CUDA) or any CTranslate2 type
    beam_size: int = 5
    # Decoding that fails (repetition, low confidence) is retried at temperatures 0.2..1.0, as
    # faster-whisper and upstream's evaluation do; false decodes once (faster on buzzing audio).
    temperature_fallback: bool = True
    cpu_threads: int = 0  # 0: CTranslate2's default


def bundled_asr() -> AsrConfig:
    """``asr=tiny_en`` as conf/asr/tiny_en.yaml sets it: Whisper tiny.en shipped in a package, offline."""
    return AsrConfig(name="tiny_en", model="bundled", language="en", beam_size=1, temperature_fallback=False)


@dataclass
class RecordingsDataConfig(DataConfig):
    """``data=recordings``: a folder of long recordings, cut into clips, transcribed and reviewed.

    The clips, their ``metadata.csv`` and the review land in ``work_dir``, which is then prepared
    exactly as ``data=csv_wavs`` would prepare it (see f5app/data/recordings/ and docs/recordings.md).
    """

    name: str = "recordings"
    work_dir: Optional[str] = None  # clips, metadata.csv (edit it), review.html; default <data.path>/f5app_clips
    sample_rate: int = 24000  # clips are written at the model's rate (model.mel.target_sample_rate)
    min_seconds: float = 2.0  # shorter speech is dropped (listed in the review)
    max_seconds: float = 15.0  # upstream maintainers: clips over ~15-20 s hurt quality
    max_pause_seconds: float = 1.0  # a clip never spans a silence this long
    pad_seconds: float = 0.25  # silence kept around the speech (at most half the pause to the next clip)
    vad_threshold: float = 0.5  # silero-vad speech probability
    loudness_lufs: float = -20.0  # BS.1770 integrated loudness every clip is normalised to
    min_loudness_lufs: float = -45.0  # quieter clips are dropped (too_quiet)
    max_clipped_fraction: float = 0.001  # clips with more samples at full scale are dropped (clipping)
    min_confidence: float = 0.6  # lower ASR confidence is flagged for review
    # DNSMOS overall (P.835 OVRL, 1..5) under which a clip is left out: f5-tts's recordings score
    # 3.3-3.5, with white noise at 10 dB SNR 2.1-2.3, at 0 dB 1.6-1.9 (f5app/speech/quality.py); 0 keeps every clip
    min_dnsmos: float = 2.0
    # A symbolic link whose target lies outside data.path is reported and skipped unless true
    # (a link planted in a shared folder must not pull a private recording into the training set).
    follow_links: bool = False
    # Whose clips are kept (f5app/data/recordings/speakers.py): main (S1, who speaks most) | all |
    # N (the N who speak most) | an id as the review's speakers.html shows it (S1, S2, ... by speech
    # time). Other speakers' clips and overlapping speech are left out of metadata.csv, listed in the review.
    speaker: str = "main"
    num_speakers: Optional[int] = None  # null: found by a measured similarity threshold; N: exactly N voices
    asr: Optional[AsrConfig] = None  # conf/data/recordings.yaml: ${asr}, the asr= group (None: AsrConfig())


@dataclass
class SpeakerConfig:
    """Speaker embedder for speaker similarity (SIM); see f5app/speech/speaker.py."""

    name: str = "resemblyzer"  # resemblyzer (weights in the package) | wavlm (speaker.model: Hub id or folder) | none
    model: Optional[str] = None  # wavlm: e.g. microsoft/wavlm-base-plus-sv; resemblyzer: ignored
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    device: str = "auto"  # auto (the caller's device) | cpu | cuda


@dataclass
class EvalSetConfig:
    """One named prompt set of ``eval.sets`` (f5app/evaluation/sets.py, docs/evaluation.md)."""

    prompt_file: Optional[str] = None  # null: the run's own held-out split; else a Seed-TTS meta.lst or LibriSpeech-PC list
    language: Optional[str] = None  # what the ASR is told and the text normaliser's language; null: eval.language
    prompt_format: str = "auto"  # auto | seedtts | librispeech_pc
    audio_root: Optional[str] = None  # librispeech_pc: the LibriSpeech test-clean folder
    num_prompts: Optional[int] = None  # null: eval.num_prompts


@dataclass
class EvalConfig:
    """What evaluation synthesises and how it scores; see f5app/evaluation/ and docs/evaluation.md."""

    every: int = 500  # training: evaluate every N updates and at the last one (0: never); saved with its checkpoint
    prompt_file: Optional[str] = None  # null: pairs of held-out validation clips; else a Seed-TTS meta.lst or LibriSpeech-PC list
    prompt_format: str = "auto"  # auto | seedtts | librispeech_pc
    audio_root: Optional[str] = None  # librispeech_pc: the LibriSpeech test-clean folder
    num_prompts: int = 4  # 0: every prompt of the file (or every validation clip)
    seed: int = 0  # which held-out clips pair up; prompt i is synthesised with seed + i
    language: Optional[str] = None  # normalisation and ASR language; default asr.language
    nfe_step: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    speed: float = 1.0
    save_audio: bool = True  # keep each generated clip beside the results
    # Named prompt sets, each scored on its own (wer@NAME); empty: the one set above, as before.
    sets: dict[str, EvalSetConfig] = field(default_factory=dict)


@dataclass
class TextNormConfig:
    """How written text becomes what is said (f5app/text/, docs/text_norm.md): the ``text_norm=`` group."""

    name: str = "auto"  # auto (the language's normaliser when there is one, else none) | num2words | none
    language: Optional[str] = None  # en, pt-BR, es, fr, de...; null: the checkpoint's recorded language, else en
    lexicon: Optional[str] = None  # a file of 'WORD = how to say it' / '/REGEX/ = ...' lines, applied first
    apply_to_training: bool = False  # normalise training transcripts too (data preparation), so both agree


@dataclass
class TrainConfig:
    run_name: str = "default"
    sweep_name: str = "${run_name}"
    output_root: str = "outputs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # What the run returns to a sweep (Optuna minimises or maximises it): its best val_loss, wer, cer or sim.
    objective: str = "val_loss"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    text_norm: TextNormConfig = field(default_factory=TextNormConfig)


@dataclass
class VoiceConfig:
    """One extra voice for ``[NAME]`` tags; InferConfig.voices holds them as plain dicts (validated into this)."""

    ref_audio: str = MISSING
    ref_text: str = ""
    speed: Optional[float] = None  # default: the run's speed
    # A LoRA adapter checkpoint trained on the same base as the main model: this voice speaks with it
    # (one base in memory, adapters switched by voice; docs/lora.md).
    adapter: Optional[str] = None


@dataclass
class ReferenceConfig:
    """How a reference clip is prepared and judged (f5app/inference/reference.py, docs/inference.md).

    ASR (the ``asr=`` group) transcribes a reference given without ``ref_text`` and finds the word
    where an over-long one is cut, whether or not ``check`` is on.
    """

    # Judge every reference: ref_text against the ASR, level, clipping, DNSMOS, speakers. infer warns,
    # an upload is refused. Off in the Python API's defaults, so a Synthesizer built in code loads
    # no ASR, speaker or DNSMOS model for a short reference with its transcript; the command
    # lines' YAML (conf/infer.yaml, conf/serve.yaml) turns it on.
    check: bool = False
    max_wer: float = 0.5  # a given ref_text further than this from the ASR's transcript is wrong
    min_rms_dbfs: float = -45.0  # quieter speech is too faint
    max_peak_dbfs: float = 0.0  # 0: only clipping counts (see max_clipped_fraction)
    max_clipped_fraction: float = 0.001  # more samples at full scale: clipped
    min_dnsmos: float = 2.5  # DNSMOS overall (P.835 OVRL, 1..5); f5-tts's recordings score 3.3-3.5
    max_speaker_spread: float = 0.27  # one voice scores 0.10-0.22, two joined 0.31-0.35 (evaluation/quality.py)
    speaker_window: float = 3.0  # seconds per window of the speaker-spread check
    min_cut_pause: float = 0.3  # a cut prefers a pause between words at least this long (seconds)


@dataclass
class VerifyConfig:
    """``verify=asr``: every chunk transcribed and compared with its text and the reference voice,
    drawn again with the next seed when it misses (f5app/inference/verify.py)."""

    name: str = "off"  # off | asr
    max_wer: float = 0.2  # a chunk whose transcript is further from its text is drawn again
    min_sim: float = 0.0  # a chunk whose voice is less similar to the reference is drawn again (speaker=none: ignored)
    max_tries: int = 3  # draws per chunk, the first included; the best is kept


@dataclass
class InferConfig:
    run_name: str = "default"
    output_root: str = "outputs"
    run_dir: str = "${output_root}/runs/${run_name}"
    text: Optional[str] = None
    text_file: Optional[str] = None
    ref_audio: Optional[str] = None
    ref_text: Optional[str] = None
    # NAME -> VoiceConfig fields. Plain dicts because OmegaConf cannot add keys to a dict of
    # dataclasses from the command line: +voices.town.ref_audio=FILE +voices.town.ref_text="..."
    voices: dict[str, Any] = field(default_factory=dict)
    out: Optional[str] = None
    out_dir: Optional[str] = None
    overwrite: bool = False
    save_spectrogram: bool = False
    nfe_step: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    speed: float = 1.0
    cross_fade: float = 0.15
    seed: Optional[int] = None
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: docs/inference.md "Speed")
    quantize: str = "none"  # none | int8: the DiT's linear layers as dynamic int8 (CPU, dtype=fp32)
    compile: bool = False  # torch.compile the DiT (first call compiles: tens of seconds)
    steps: Optional[str] = None  # fast | balanced | quality: nfe_step 7 | 16 | 32 (replaces nfe_step)
    unknown_chars: str = "drop"  # drop | error
    target_rms: float = 0.1  # quieter references are scaled up to this RMS (output scaled back)
    max_ref_seconds: float = 12.0  # longer references are cut at a pause, with a warning
    progress: bool = True  # tqdm bar over chunks of long texts
    best_of: int = 1  # synthesise N candidates (seeds seed..seed+N-1), keep the lowest WER (ties: highest SIM)
    max_batch: int = 0  # chunks synthesised together in one padded batch; 0: auto (8 on CUDA, else 1)
    fix_duration: Optional[float] = None  # seconds, reference included, for every chunk (upstream's meaning); null: from the text
    remove_silence: bool = False  # silences over 1 s shortened, as upstream's remove_silence_for_generated_wav
    save_chunks: bool = False  # each chunk's audio written to <out stem>_chunks/ beside the output
    speaking_rate: str = "auto"  # auto | asr (word timestamps of the asr= model) | duration (the reference's length)
    model: ModelConfig = field(default_factory=ModelConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    asr: AsrConfig = field(default_factory=bundled_asr)  # references (transcripts, cuts, checks), verify, best_of
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)  # reference speaker check, verify, best_of
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    text_norm: TextNormConfig = field(default_factory=TextNormConfig)


@dataclass
class EvalAppConfig:
    """``python -m f5app.eval``: score a checkpoint (or the recordings) on held-out prompts."""

    run_name: str = "demo"
    output_root: str = "outputs"
    run_dir: str = "${output_root}/runs/${run_name}"
    source: str = "model"  # model (synthesise with the resolved checkpoint) | recordings (the ground truth)
    # Side by side in one command: run names, run folders, checkpoint paths, pretrained, recordings.
    compare: list[str] = field(default_factory=list)
    out: Optional[str] = None  # the JSON results; default ${run_dir}/eval/eval-<what>-<time>.json
    device: str = "auto"
    dtype: str = "fp32"  # as training's evaluation synthesises (its EMA weights), so scores match; auto/bf16 is faster
    quantize: str = "none"  # as InferConfig
    compile: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    text_norm: TextNormConfig = field(default_factory=TextNormConfig)


@dataclass
class ServerConfig:
    """``python -m f5app.serve``: where it listens, who may call it, and how much one call may ask."""

    host: str = "127.0.0.1"  # any other address needs an API key
    port: int = 8000
    api_key: Optional[str] = None  # bearer token; default: the environment variable below
    api_key_env: str = "F5APP_API_KEY"
    cors_origins: list[str] = field(default_factory=list)  # e.g. [http://localhost:3000]; empty: only the server's own page
    # Host names (``name`` at server.port, or ``name:port``) the server is reached by besides
    # localhost, loopback and server.host; without a key any other Host is refused (DNS rebinding).
    allowed_hosts: list[str] = field(default_factory=list)
    model_id: Optional[str] = None  # the name /v1/models lists; default: f5app-<run_name>
    voices_dir: Optional[str] = None  # uploaded voices; default: <run_dir>/voices
    max_text_chars: int = 4096  # OpenAI's limit for `input`
    max_request_bytes: int = 65536  # JSON bodies
    max_upload_bytes: int = 10 * 1024 * 1024  # a reference clip upload
    max_upload_seconds: float = 60.0  # longer uploads are refused from the file's header (references are cut to max_ref_seconds anyway)
    max_transcript_chars: int = 1000  # an uploaded voice's transcript
    # ... and at most this many characters per second of the speech synthesis keeps (speech is ~15):
    # a transcript far longer than its clip made every request with that voice fail.
    max_transcript_chars_per_second: float = 30.0
    reference_cache_size: int = 16  # voices kept prepared in memory (least recently used dropped first)
    max_nfe_step: int = 64
    queue_size: int = 16  # requests waiting for the model; beyond it: 429 with Retry-After
    max_active: int = 8  # requests whose chunks the worker interleaves and batches
    request_timeout: float = 300.0  # seconds from arrival to the last audio byte
    shutdown_timeout: float = 60.0  # SIGTERM: seconds to finish in-flight requests
    log_level: str = "info"
    # An upload without a transcript is transcribed with the asr= group (f5app.speech.asr);
    # false: such uploads are refused (400) and name the transcript field.
    transcribe_uploads: bool = False


@dataclass
class ServeConfig(InferConfig):
    """InferConfig (checkpoint, model, vocoder, sampling defaults, configured voices) plus the server."""

    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass
class StudioConfig:
    """``python -m f5app.studio``: pages over ``output_root`` (runs, checkpoints, listening, review, training)."""

    output_root: str = "outputs"
    # Folders the page may name as training data or recordings to review; nothing outside them
    # (or output_root) is ever read or written on a page's request.
    data_roots: list[str] = field(default_factory=list)
    max_jobs: int = 8  # comparisons and preparations waiting their turn; beyond it: 429
    log_tail_lines: int = 40  # lines of a job's log shown on the page
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=8100))


def register_configs() -> None:
    """Register the schemas and the ``f5app_asset`` resolver. Idempotent.

    Entry points and tests call :func:`f5app.hydra_setup.register`, which adds the resolvers
    that belong to feature modules (this module imports none of them).
    """
    OmegaConf.register_new_resolver("f5app_asset", lambda name: str(ASSETS_DIR / name), replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="infer_schema", node=InferConfig)
    cs.store(name="eval_app_schema", node=EvalAppConfig)
    cs.store(name="serve_schema", node=ServeConfig)
    cs.store(name="studio_schema", node=StudioConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="data", name="recordings_data_schema", node=RecordingsDataConfig)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="ckpt", name="ckpt_schema", node=CkptConfig)
    cs.store(group="vocoder", name="vocoder_schema", node=VocoderConfig)
    cs.store(group="asr", name="asr_schema", node=AsrConfig)
    cs.store(group="speaker", name="speaker_schema", node=SpeakerConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
    cs.store(group="finetune", name="finetune_schema", node=FinetuneConfig)
    cs.store(group="text_norm", name="text_norm_schema", node=TextNormConfig)
    cs.store(group="verify", name="verify_schema", node=VerifyConfig)


def to_settings(cfg: DictConfig | dict[str, Any], schema: type) -> Any:
    """Turn a composed config (or a plain dict, e.g. from checkpoint metadata) into ``schema``.

    Unknown keys are an error naming the key, so a stale or hand-edited config cannot slip
    through with a value that is silently ignored. Interpolations are resolved once, by
    ``to_object``: resolving twice would turn the escaped interpolations of free text
    (f5app/free_text.py) back into interpolations.
    """
    base = OmegaConf.structured(schema)
    merged = OmegaConf.merge(base, cfg)
    return OmegaConf.to_object(merged)


def model_presets() -> dict[str, ModelConfig]:
    """Every ``conf/model/*.yaml`` preset by name, for recognising a file's family by its shapes."""
    presets = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        tree = OmegaConf.to_container(OmegaConf.load(path))
        if isinstance(tree, dict) and "arch" in tree:
            tree.pop("defaults", None)
            presets[path.stem] = model_config_from_dict(tree)
    return presets


def data_schema_for(tree: DictConfig | dict[str, Any]) -> type:
    """The data schema a data tree (composed, or recorded in a checkpoint) was written with."""
    return RecordingsDataConfig if tree.get("name") == "recordings" else DataConfig


def model_config_from_dict(recorded: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from a checkpoint's recorded ``model`` tree, built directly.

    Resolution reads this from every candidate's metadata; going through OmegaConf costs ~10 ms
    each, which was most of resolving a run. Unknown keys raise TypeError, like OmegaConf would.
    """
    fields = dict(recorded)
    arch = ArchConfig(**fields.pop("arch", {}))
    mel = MelConfig(**fields.pop("mel", {}))
    return ModelConfig(**fields, arch=arch, mel=mel)


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config tree as plain containers (what checkpoint metadata records)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
