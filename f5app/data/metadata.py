"""Reading ``metadata.csv``: which layout it uses, one entry per usable line, a reason per bad one.

Two layouts are accepted:

* upstream's ``audio_file|text`` with that header; paths absolute or relative to the folder;
* LJSpeech's headerless ``id|text|normalized`` (``id`` names ``wavs/<id>.wav``; the normalized
  column wins when present and non-empty).

Lines are split on ``|`` without CSV quoting, so transcripts keep their quote marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from f5app.files import NotRegularFile, read_regular_bytes
from f5app.errors import MetadataError  # re-exported: data.prepare and data.recordings import it from here

UPSTREAM_LAYOUT = "audio_file|text"
LJSPEECH_LAYOUT = "ljspeech"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
#: 256 MiB: about two million lines; a link to /dev/zero named metadata.csv stops here.
MAX_METADATA_BYTES = 256 * 1024 * 1024
# First-line words that mean "this was meant as a header", so a wrong header is not read as data.
_PATH_HEADER_WORDS = {"audio_file", "audio", "file", "filename", "file_name", "path", "audio_path", "wav", "id"}
_HEADER_WORDS = _PATH_HEADER_WORDS | {"text", "transcript", "transcription", "sentence", "normalized", "speaker"}


@dataclass(frozen=True)
class MetadataRow:
    line: int  # 1-based line number in metadata.csv
    audio_path: Path  # absolute
    text: str


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str  # malformed_line | empty_text | duplicate | missing_file | not_a_file | unreadable_audio | duration_out_of_range
    detail: str
    audio_path: str | None = None


@dataclass
class Metadata:
    path: Path
    layout: str
    rows: list[MetadataRow]
    bad: list[BadRow]


def read_metadata(folder: Path) -> Metadata:
    """Parse ``folder/metadata.csv``. Raises MetadataError for a missing file or a wrong header."""
    path = folder / "metadata.csv"
    if not folder.is_dir():
        raise MetadataError(f"data.path={folder} is not a folder; point it at the folder holding metadata.csv")
    if not path.exists():
        raise MetadataError(f"{path} not found; data.path must be a folder holding metadata.csv")
    try:
        raw = read_regular_bytes(path, MAX_METADATA_BYTES)
    except NotRegularFile as error:
        raise MetadataError(f"{path} is {error.strerror}; metadata.csv must be a regular text file") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise MetadataError(f"{path} is not UTF-8 text (bad byte at offset {error.start}); save it as UTF-8") from None
    lines = content.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise MetadataError(f"{path} is empty; expected a header 'audio_file|text' and one line per clip")

    layout = _detect_layout(path, lines[first])
    # extra header columns (e.g. speaker) are ignored, as upstream does; with exactly two, a '|'
    # inside the transcript stays part of it
    columns = len(lines[first].split("|"))
    start = first + 1 if layout == UPSTREAM_LAYOUT else first
    rows: list[MetadataRow] = []
    bad: list[BadRow] = []
    seen: dict[Path, int] = {}
    for index in range(start, len(lines)):
        line_number = index + 1
        line = lines[index]
        if not line.strip():
            continue
        parsed = _parse_upstream(line, folder, columns) if layout == UPSTREAM_LAYOUT else _parse_ljspeech(line, folder)
        if isinstance(parsed, str):
            bad.append(BadRow(line_number, "malformed_line", parsed))
            continue
        audio_path, text = parsed
        if not text:
            bad.append(BadRow(line_number, "empty_text", "the transcript is empty", str(audio_path)))
            continue
        if audio_path in seen:
            bad.append(BadRow(line_number, "duplicate", f"same audio as line {seen[audio_path]}", str(audio_path)))
            continue
        seen[audio_path] = line_number
        rows.append(MetadataRow(line_number, audio_path, text))
    return Metadata(path=path, layout=layout, rows=rows, bad=bad)


def _detect_layout(path: Path, first_line: str) -> str:
    fields = [field.strip() for field in first_line.split("|")]
    if len(fields) >= 2 and fields[0] == "audio_file" and fields[1] == "text":
        return UPSTREAM_LAYOUT
    expected = "expected the header 'audio_file|text' or LJSpeech's headerless 'id|text|normalized' lines"
    if len(fields) < 2 or len(fields) > 3:
        raise MetadataError(f"{path}: line 1 {first_line[:60]!r} is not '|'-separated like either layout; {expected}")
    names_a_column = fields[0].lower() in _PATH_HEADER_WORDS and not (path.parent / "wavs" / f"{fields[0]}.wav").exists()
    if names_a_column or all(field.lower() in _HEADER_WORDS for field in fields):
        raise MetadataError(f"{path}: wrong header {first_line[:60]!r}; {expected}")
    return LJSPEECH_LAYOUT


def _resolve(folder: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = folder / candidate
    return candidate.resolve()


def _parse_upstream(line: str, folder: Path, columns: int) -> tuple[Path, str] | str:
    fields = line.split("|", columns - 1)
    if len(fields) < 2:
        return "expected 'audio_file|text' (no '|' on this line)"
    audio, text = fields[0].strip(), fields[1].strip()
    if not audio:
        return "the audio_file column is empty"
    return _resolve(folder, audio), text


def _parse_ljspeech(line: str, folder: Path) -> tuple[Path, str] | str:
    fields = line.split("|")
    if len(fields) not in (2, 3):
        return f"expected 'id|text|normalized' (found {len(fields)} '|'-separated fields)"
    clip_id = fields[0].strip()
    if not clip_id:
        return "the id column is empty"
    text = fields[1].strip()
    if len(fields) == 3 and fields[2].strip():
        text = fields[2].strip()
    name = clip_id if clip_id.lower().endswith(AUDIO_SUFFIXES) else f"{clip_id}.wav"
    return _resolve(folder / "wavs", name), text


def metadata_text(rows: list[tuple[str, str]]) -> str:
    """``metadata.csv`` in upstream's layout for ``(audio_file, text)`` rows (what :func:`read_metadata` reads back).

    A transcript is one line: line breaks inside it become spaces.
    """
    lines = [UPSTREAM_LAYOUT]
    for audio_file, text in rows:
        if "|" in audio_file or "\n" in audio_file:
            raise ValueError(f"an audio_file cannot hold '|' or a line break: {audio_file!r}")
        lines.append(f"{audio_file}|{' '.join(text.split())}")
    return "\n".join(lines) + "\n"
