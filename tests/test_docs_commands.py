"""Every command shown in README.md and docs/*.md works as written.

The commands are read from the Markdown itself: every line of a ``bash``/``sh``/``shell``/``console``
fence (``\\`` continuations joined, comments dropped; a fence starting with ``#!`` is one script),
and the lines of an untagged fence that start with a command (``python``, ``scripts/``...). So a
command added to the docs is picked up here, and fails loudly unless it runs or is listed in
SKIPPED with the reason. A fence right after a ``<!-- tested: tests/test_x.py ... -->`` line is run
as written by that test (a walk-through with its own files and bounds), so it is skipped here.

They run one after the other, in the order of the files, in one temporary folder (what one command
trains, the next one speaks with), through bash, with HOME pointing at a temporary home that holds
``$HOME/my_voice`` (a copy of the bundled demo set). What this machine cannot do as written is changed
in the visible ways listed in SUBSTITUTIONS (tiny models and a couple of updates instead of
F5TTS_v1_Base and thousands; stand-ins for files fetched from the Hub), and the files the docs
assume the reader has are made first (PREREQUISITES).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

SHELL_FENCES = {"bash", "sh", "shell", "console"}
#: In an untagged fence, a line whose first word is one of these is a command.
COMMAND_WORD = re.compile(r"^(?:(?:\.venv/bin/)?python3?|f5app-\S+|scripts/\S+|accelerate|torchrun|pip|echo|bash|curl|srun|sbatch)$")

#: (pattern searched in the command, why it does not run here). First match wins.
SKIPPED: list[tuple[str, str]] = [
    (r"^scripts/test\.sh", "runs this very test suite (it is CI's own command)"),
    (r"^scripts/demo\.sh", "bootstraps .venv and trains 300 updates in the checkout's own outputs/; "
                           "its steps (train experiment=demo, ckpt list, infer) run here as PREREQUISITES and below"),
    (r"#SBATCH|\bsrun\b|\bscontrol\b", "a SLURM batch script: needs a SLURM cluster"),
    (r"--multi_gpu", "needs several GPUs (two CPU processes training together: tests/test_train_processes.py)"),
    (r"hydra/launcher=slurm", "submits the jobs to SLURM"),
    (r"scripts/bench\.py", "the benchmark measures for minutes by design (its resolution section: tests/test_bench.py)"),
    (r"scripts/bench_speed\.py", "measures real-size models for minutes by design (at tiny size: tests/test_gpu_check.py)"),
    (r"scripts/bench_duplicates\.py", "measures the duplicate threshold over every pair of f5-tts's recordings; "
                                       "tests/test_recordings_duplicates.py holds the same copies to MATCH_THRESHOLD"),
    (r"scripts/bench_speakers\.py", "diarises dozens of mixtures for minutes by design; tests/test_recordings_speakers.py holds "
                                     "a two- and a three-speaker mixture to the same figures"),
    (r"scripts/gpu_check\.sh", "the GPU check: several minutes; tests/test_gpu_check.py runs it with --device cpu --model tiny"),
    (r"f5app[.-]serve|\bcurl\b", "a server that runs until stopped, and the clients calling it: "
                                                          "tests/test_serve_docs.py starts docs/serving.md's servers in the background, "
                                                          "runs its curl and Python blocks against them, and stops them with SIGTERM"),
    (r"f5app[.-]studio", "a web application that runs until stopped: tests/test_studio.py starts it on a free port over real runs "
                         "and drives its pages in headless Chromium"),
    (r"f5app\.data\.recordings\.example|data=recordings|my_recordings/", "docs/recordings.md's walk-through (a long recording made from f5-tts's "
                                                         "speech, prepared with the bundled ASR, trained on): tests/test_recordings.py "
                                                         "runs its commands as written; $HOME/audiobook stands for the user's own folder"),
    (r"outputs/runs/ana_lora/", "two voices' LoRA fine-tunes of F5TTS_v1_Base (ana_lora, bob_lora) and their recordings "
                                "stand for the reader's own: the walk-through's last command (tests/test_lora_docs.py) "
                                "speaks two adapter checkpoints on one base as written"),
    (r"\[[^\]]*(?:--|\|)[^\]]*\]", "a synopsis: its [--options] and a|b choices are placeholders"),
]

#: What may run: f5app's own commands, as modules or console scripts (also fed by echo through a pipe).
RUNNABLE = re.compile(r"^(?:echo [^|]*\|\s*)?(?:python -m f5app\.\w+|f5app-\w+)(?:\s|$)")

TRAIN = re.compile(r"^python -m f5app\.train\b")
#: Instead of thousands of updates: two, saved and validated, with no logger.
TINY_BOUNDS = "trainer.max_updates=2 trainer.save_every=2 trainer.val_every=2 trainer.sample_every=0 logger=none trainer.progress_bar=false"


def _tiny_model(command: str) -> str:
    if not (TRAIN.match(command) or command.startswith("python -m f5app.ckpt resolve")) or "experiment=" in command:
        return command
    keep_data = " data=csv_wavs" if "data.path=" in command and not re.search(r"\bdata=", command) else ""
    return f"{command} experiment=demo{keep_data}"


def _tiny_training(command: str) -> str:
    return f"{command} {TINY_BOUNDS}" if TRAIN.match(command) else command


#: The checkpoint the prerequisite demo run saves at its last update.
DEMO_CHECKPOINT = "outputs/runs/demo/checkpoints/update_00000002"


def _lora_base(command: str) -> str:
    if not TRAIN.match(command) or "finetune=lora" not in command or "ckpt.path=" in command:
        return command
    return f"{command} ckpt.path={DEMO_CHECKPOINT}"


@dataclass(frozen=True)
class Substitution:
    why: str
    apply: Callable[[str], str]


def _sub(pattern: str, replacement: str) -> Callable[[str], str]:
    return lambda command: re.sub(pattern, replacement, command)


#: Applied in this order to every command that runs; each says why.
SUBSTITUTIONS = [
    Substitution("training (and resolving for training) uses the tiny demo model with scratch allowed "
                 "(experiment=demo) instead of fine-tuning F5TTS_v1_Base fetched from the Hub; "
                 "data=csv_wavs keeps the documented data group when the command names data.path", _tiny_model),
    Substitution(f"training stops after 2 updates ({TINY_BOUNDS})", _tiny_training),
    Substitution(f"LoRA's base is the demo run's tiny checkpoint ({DEMO_CHECKPOINT}) instead of F5TTS_v1_Base "
                 "from the Hub", _lora_base),
    Substitution("the 10000th update's checkpoint is the 2nd here (training stops after 2 updates)",
                 _sub(r"update_00010000\b", "update_00000002")),
    Substitution("an Optuna search runs 2 trials instead of 20", _sub(r"hydra\.sweeper\.n_trials=\d+", "hydra.sweeper.n_trials=2")),
    Substitution("the stand-in for upstream's released model_1250000.safetensors is a tiny model in the same format",
                 lambda c: c.replace("model=f5tts_v1_base", "model=tiny") if "ckpts/model_1250000.safetensors" in c else c),
    Substitution("Vocos's weights come from the Hub: a tiny random Vocos in the Hub's layout stands in",
                 lambda c: c.replace("vocoder=vocos", "vocoder=vocos vocoder.local_path={vocos}")),
    Substitution("what the docs write to /tmp goes to this test's own folder", _sub(r"/tmp/", "{tmp}/")),
]

#: What the docs assume the reader already has, made before the first command.
PREREQUISITES = {
    "$HOME/my_voice": "your recordings: a copy of the bundled demo set (metadata.csv + wavs/)",
    "$HOME/english": "a base-language replay set: a metadata.csv naming f5-tts's English example recordings",
    "outputs/runs/demo": "the demo run scripts/demo.sh trains: `python -m f5app.train experiment=demo` with the tiny bounds",
    "story.txt, me.flac, town.flac": "a text to read and two voices (upstream F5-TTS's example recordings)",
    "ckpts/model_1250000.safetensors": "upstream's released weights: a tiny model in the same format, with its vocab.txt",
}


@dataclass(frozen=True)
class Command:
    where: str  # "docs/inference.md:12"
    text: str  # as written (continuation lines joined)
    tested_by: Optional[str] = None  # the test a <!-- tested: ... --> marker names

    def skip_reason(self) -> Optional[str]:
        if self.tested_by is not None:
            return f"a walk-through that {self.tested_by} runs exactly as written, with its own files and bounds"
        return next((why for pattern, why in SKIPPED if re.search(pattern, self.text, re.M)), None)

    def as_run(self, places: dict[str, str]) -> str:
        command = self.text
        for substitution in SUBSTITUTIONS:
            command = substitution.apply(command)
        for name, value in places.items():
            command = command.replace("{" + name + "}", value)
        return command


TESTED_MARKER = re.compile(r"^<!--\s*tested:\s*(tests/\S+\.py)\b")


def commands_in(path: Path) -> list[Command]:
    found, fence, start, block, tested_by, previous = [], None, 0, [], None, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, start, block = line.strip()[3:].strip().lower(), number, []
                marker = TESTED_MARKER.match(previous)
                tested_by = marker.group(1) if marker else None
            else:
                found += [Command(c.where, c.text, tested_by) for c in _commands_of_block(path, fence, start, block)]
                fence = None
        elif fence is not None:
            block.append(line)
        if line.strip():
            previous = line.strip()
    return found


def _commands_of_block(path: Path, fence: str, start: int, lines: list[str]) -> list[Command]:
    where = lambda offset: f"{path.relative_to(REPO)}:{start + 1 + offset}"  # noqa: E731
    if fence in SHELL_FENCES and lines and lines[0].startswith("#!"):
        return [Command(where(0), "\n".join(lines))]
    commands, current, first = [], "", 0
    for offset, line in enumerate(lines):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if not current:
            first = offset
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current = (current + _without_comment(stripped)).rstrip()
        words = current.split()
        if fence in SHELL_FENCES or (not fence and words and COMMAND_WORD.match(words[0])):
            commands.append(Command(where(first), current))
        current = ""
    return commands


def _without_comment(line: str) -> str:
    """``line`` up to a shell comment: a ``#`` after a space, outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def all_commands() -> list[Command]:
    return [command for doc in DOCS for command in commands_in(doc)]


# ------------------------------------------------------------------------------ without running


def test_the_extractor_finds_the_readmes_commands_as_written():
    texts = [command.text for command in all_commands()]
    assert 'python -m f5app.infer run_name=my_voice ckpt=best text="Olá, tudo bem?"' in texts
    assert "python -m f5app.train -m data.path=$HOME/my_voice optim.lr=1e-5,3e-5 sweep_name=lr" in texts
    voices = next(t for t in texts if "+voices.town.ref_audio=town.flac" in t)
    assert voices.endswith("+voices.town.speed=0.8") and "\\" not in voices  # continuation lines joined


def test_a_tested_marker_names_a_test_that_reads_that_document():
    marked = [c for c in all_commands() if c.tested_by is not None]
    assert any(c.where.startswith("docs/lora.md:") for c in marked)
    for command in marked:
        test = REPO / command.tested_by
        document = command.where.split(":")[0]
        assert test.is_file(), f"{command.where}: its marker names {command.tested_by}, which does not exist"
        assert Path(document).name in test.read_text(encoding="utf-8"), f"{command.tested_by} does not read {document}"


def test_every_command_in_the_docs_either_runs_here_or_says_why_not():
    unknown = [f"{c.where}: {c.text}" for c in all_commands() if c.skip_reason() is None and not RUNNABLE.match(c.text)]
    assert unknown == [], "commands this test does not know: make them runnable here or add them to SKIPPED with the reason"


# ------------------------------------------------------------------------------ running them


@dataclass
class Outcome:
    command: str  # as run
    returncode: int
    stdout: str
    output: str  # stdout and stderr
    seconds: float
    work: Path  # where it ran


def _make_prerequisites(home: Path, work: Path, tmp: Path) -> dict[str, str]:
    import soundfile

    from f5app.config import ASSETS_DIR
    from infer_fixtures import random_vocos_folder, upstream_ref_wav, upstream_release_safetensors
    from train_fixtures import make_english_folder

    shutil.copytree(ASSETS_DIR / "demo", home / "my_voice")
    make_english_folder(home)
    (work / "story.txt").write_text("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.\n", encoding="utf-8")
    wav, rate = soundfile.read(upstream_ref_wav())
    soundfile.write(work / "me.flac", wav, rate)
    shutil.copy(upstream_ref_wav().parent.parent / "multi" / "town.flac", work / "town.flac")
    upstream_release_safetensors(work / "ckpts" / "model_1250000.safetensors")
    vocos = random_vocos_folder(tmp / "vocos")
    return {"vocos": str(vocos), "tmp": str(tmp)}


def _run(command: str, work: Path, env: dict[str, str], timeout: float = 240) -> Outcome:
    started = time.perf_counter()
    try:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        returncode, stdout, stderr = -1, "", f"timed out after {timeout} s"
    return Outcome(command, returncode, stdout, stdout + stderr, time.perf_counter() - started, work)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Run every runnable command once, in order; keyed by Command.where."""
    root = tmp_path_factory.mktemp("docs")
    home, work, tmp = root / "home", root / "work", root / "tmp"
    for folder in (home, work, tmp):
        folder.mkdir()
    places = _make_prerequisites(home, work, tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "F5APP_"))}
    env.update(
        HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
        MPLCONFIGDIR=str(tmp / "matplotlib"), F5APP_CACHE_DIR=str(tmp / "cache"), PYTHONUTF8="1",
    )
    demo = _run(f"python -m f5app.train experiment=demo {TINY_BOUNDS}", work, env)
    assert demo.returncode == 0, f"prerequisite outputs/runs/demo: {demo.output[-3000:]}"

    results: dict[str, Outcome] = {}
    by_text: dict[str, Outcome] = {}
    for command in all_commands():
        if command.skip_reason() is not None or not RUNNABLE.match(command.text):
            continue
        as_run = command.as_run(places)
        if as_run not in by_text:  # the same command in two files runs once
            by_text[as_run] = _run(as_run, work, env)
        results[command.where] = by_text[as_run]
    for outcome in [demo, *by_text.values()]:  # shown with -s, or beside a failure
        print(f"{outcome.seconds:6.1f} s  exit {outcome.returncode}  {outcome.command}")
    return results


DOC_COMMANDS = all_commands()


@pytest.mark.slow
@pytest.mark.parametrize("command", DOC_COMMANDS, ids=[c.where for c in DOC_COMMANDS])
def test_the_command_works_as_written(command, outcomes):
    reason = command.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    outcome = outcomes[command.where]
    assert outcome.returncode == 0, f"{command.where}\nwritten: {command.text}\nran:     {outcome.command}\n{outcome.output[-4000:]}"
    if re.search(r"python -m f5app\.infer\b", command.text):  # its last line on stdout is the audio it wrote
        assert Path(outcome.work, outcome.stdout.strip().splitlines()[-1]).is_file(), outcome.output[-2000:]
