"""Free text reaches the program exactly as typed: ``text=``, ``ref_text=`` and each voice's
``ref_text`` take any sentence (commas, quotes, ``=``, ``${...}``, emoji, any script), while every
other key keeps Hydra's grammar. ``text_file=FILE`` and ``text_file=-`` (standard input) too.

The table goes through the real path: the argv rewrite, Hydra's override parser and composition,
OmegaConf, and the typed settings the program reads.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import yaml

import f5app.infer as infer_cli
from f5app.cli_help import run_hydra_app
from f5app.config import InferConfig, to_settings
from f5app.free_text import hydra_literal, literal_overrides
from infer_fixtures import tiny_run_checkpoint

KEYS = infer_cli.FREE_TEXT_KEYS

#: Sentences a person types inside ordinary shell quotes; each must arrive unchanged.
SENTENCES = [
    "Olá, tudo bem?",
    "Hello, world: one; two; three.",
    'She said "hi", then left.',
    "It's a dog's life, isn't it?",
    "a=b, c:d, key=value",
    "100% sure, it costs $5.",
    "${HOME} and ${run_name} are not interpolated; nor is ${oc.env:HOME}.",
    r"escaped \${x} and \\${y} stay as typed",
    "unclosed ${ and a lone } and $",
    "[1, 2] {a: b} (c) <d>",
    r"back\slash, and a trailing one\\",
    'quotes "inside" and \'single\' ones',
    r'a backslash before a quote: \" and \'',
    "emoji 🎉🚀, ok?",
    "日本語のテキスト、です。",
    "Привет, мир!",
    "مرحبا، كيف حالك؟",
    "  leading and trailing spaces  ",
    "line one,\nline two",
    "null",
    "true",
    "42",
    "a,b,c",
    "~tilde +plus ++plusplus -dash",
    "'",
    '"',
    "\\",
]


@pytest.fixture
def settings_of(compose_cfg):
    """settings_of(argv) -> InferConfig: argv rewritten as the entry point does, then composed."""

    def _settings(argv: list[str]) -> InferConfig:
        return to_settings(compose_cfg("infer", literal_overrides(argv, KEYS)), InferConfig)

    return _settings


@pytest.mark.parametrize("sentence", SENTENCES)
def test_every_free_text_key_receives_the_sentence_unchanged(settings_of, sentence):
    settings = settings_of([
        f"text={sentence}", f"ref_text={sentence}",
        "+voices.town.ref_audio=town.flac", f"+voices.town.ref_text={sentence}",
        "+voices.city.ref_audio=city.flac", "+voices.city.ref_text=before", f"voices.city.ref_text={sentence}",
        "+voices.farm.ref_audio=farm.flac", f"++voices.farm.ref_text={sentence}",
    ])
    assert settings.text == sentence and settings.ref_text == sentence
    assert [settings.voices[name]["ref_text"] for name in ("town", "city", "farm")] == [sentence] * 3


def test_an_empty_value_is_an_empty_text(settings_of):
    assert settings_of(["text="]).text == ""


@pytest.mark.parametrize(
    ("typed", "received"),
    [
        ('"Hello, world"', "Hello, world"),
        ("'Hello, world'", "Hello, world"),
        (r"'It\'s here, now'", "It's here, now"),
        ('"[main] Hello there. [town] Good day to you!"', "[main] Hello there. [town] Good day to you!"),
    ],
)
def test_a_value_in_hydra_quotes_means_what_it_meant_before(settings_of, typed, received):
    assert settings_of([f"text={typed}"]).text == received


def test_other_keys_keep_hydras_grammar():
    argv = ["-m", "seed=1,2", "run_name=voice", "text_file=a,b.txt", "+voices.town.ref_audio=town.flac", "--cfg", "job", "textual=x,y"]
    assert literal_overrides(argv, KEYS) == argv
    assert literal_overrides(["text=a, b"], ()) == ["text=a, b"]


def test_literal_values_are_hydra_quoted_strings():
    assert hydra_literal("Olá, tudo bem?") == '"Olá, tudo bem?"'
    assert hydra_literal('say "hi"') == "'say \"hi\"'"  # the quote the text does not use
    assert hydra_literal("${x}") == r'"\${x}"'


@pytest.mark.parametrize("sentence", ["Olá, tudo bem?", "${HOME}, 100% = $5; \"quoted\" 🎉"])
def test_the_command_line_path_delivers_the_sentence(monkeypatch, capsys, sentence):
    monkeypatch.setattr(sys, "argv", ["f5app.infer", f"text={sentence}", "--cfg", "job", "--resolve"])
    run_hydra_app(infer_cli._hydra_main, "infer", infer_cli.USAGE, free_text_keys=KEYS)
    assert yaml.safe_load(capsys.readouterr().out)["text"] == sentence


# ------------------------------------------------------------------------------ text_file


def test_text_file_is_read_as_written(tmp_path):
    story = tmp_path / "story.txt"
    story.write_bytes("Olá, tudo bem?\r\n${HOME} = 100%; 🎉\n".encode("utf-8"))
    assert infer_cli.read_text(InferConfig(text_file=str(story))) == "Olá, tudo bem?\n${HOME} = 100%; 🎉\n"


def test_text_file_dash_reads_standard_input_as_utf8(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("Olá, tudo bem? 🎉".encode("utf-8")), encoding="latin-1"))
    assert infer_cli.read_text(InferConfig(text_file="-")) == "Olá, tudo bem? 🎉"


def test_standard_input_that_is_not_utf8_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("Olá".encode("latin-1"))))
    with pytest.raises(infer_cli.InferenceInputError, match=r"standard input \(text_file=-\) is not UTF-8"):
        infer_cli.read_text(InferConfig(text_file="-"))


def test_text_file_dash_is_a_plain_value_on_the_command_line(settings_of):
    assert settings_of(["text_file=-"]).text_file == "-"


# ------------------------------------------------------------------------------ a real process


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    tiny_run_checkpoint(root / "runs" / "voice")
    return root


FAST = ["nfe_step=2", "vocoder.n_iter=2", "device=cpu", "progress=false"]
E2E_SENTENCE = 'Olá, "tudo" bem? It\'s 100% ${HOME} = $5; {a: b} [1, 2] 🎉 日本語'


def _infer(outputs, tmp_path, *argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    command = [sys.executable, "-m", "f5app.infer", f"output_root={outputs}", "run_name=voice", "ckpt=best",
               f"out_dir={tmp_path}", *FAST, *argv]
    result = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-3000:]
    return result


@pytest.mark.slow
def test_a_fresh_process_speaks_the_sentence_as_typed(outputs, tmp_path):
    result = _infer(outputs, tmp_path, f"text={E2E_SENTENCE}")
    assert f"text: {E2E_SENTENCE!r}" in (result.stdout + result.stderr).decode("utf-8")
    assert list(tmp_path.glob("*.wav"))


@pytest.mark.slow
def test_a_fresh_process_reads_the_text_from_standard_input(outputs, tmp_path):
    result = _infer(outputs, tmp_path, "text_file=-", stdin=E2E_SENTENCE.encode("utf-8"))
    assert f"text: {E2E_SENTENCE!r}" in (result.stdout + result.stderr).decode("utf-8")
