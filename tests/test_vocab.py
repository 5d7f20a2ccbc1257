"""Vocabulary files have one reader and one writer: what is written reads back token for token, and a
file that is not a vocabulary (a flipped bit, empty, no space slot) is one line, never a traceback."""

from __future__ import annotations

import pytest

from f5app.data.vocab import VocabError, count_vocab, read_vocab, upstream_vocab_path, vocab_map, vocab_text, write_vocab

TOKENS = [" ", "a", "ã", "你", "ni3", "☃", "é"]


def test_written_vocab_reads_back_token_for_token_as_upstream_lays_it_out(tmp_path):
    path = write_vocab(TOKENS, tmp_path / "vocab.txt")

    assert read_vocab(path) == TOKENS
    assert count_vocab(path) == len(TOKENS)
    assert path.read_bytes() == vocab_text(TOKENS).encode("utf-8") == "".join(f"{t}\n" for t in TOKENS).encode("utf-8")
    assert vocab_map(TOKENS)["你"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temporary left beside it


def test_rewriting_a_vocab_replaces_it_whole(tmp_path):
    path = write_vocab(TOKENS, tmp_path / "vocab.txt")
    write_vocab([" ", "x"], path)
    assert read_vocab(path) == [" ", "x"]


def test_a_flipped_bit_is_one_line_of_damage_not_a_unicode_traceback(tmp_path):
    path = write_vocab(TOKENS, tmp_path / "vocab.txt")
    data = bytearray(path.read_bytes())
    at = data.index("ã".encode("utf-8"))
    data[at] ^= 0x40  # the lead byte of a two-byte sequence is no longer one
    path.write_bytes(bytes(data))

    for reader in (read_vocab, count_vocab):
        with pytest.raises(VocabError) as caught:
            reader(path)
        assert not isinstance(caught.value, UnicodeDecodeError)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and "damaged" in message and f"byte {at}" in message


def test_vocab_errors_are_value_errors_and_user_errors():
    from f5app.errors import UserError

    assert issubclass(VocabError, ValueError) and issubclass(VocabError, UserError)


@pytest.mark.parametrize(("content", "reason"), [(b"", "is empty"), (b"a\nb\n", "line 1 must be a single space")])
def test_a_file_that_is_not_a_vocabulary_says_why(tmp_path, content, reason):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(VocabError, match=reason):
        read_vocab(path)


def test_upstreams_pretrained_vocab_is_found_inside_the_f5_tts_package():
    path = upstream_vocab_path()
    assert path.parts[-3:] == ("infer", "examples", "vocab.txt") and "f5_tts" in path.parts
    assert count_vocab(path) == len(read_vocab(path)) == 2545


def test_prepare_with_a_damaged_custom_vocab_is_one_data_error(tmp_path):
    import numpy as np
    import soundfile as sf

    from f5app.config import DataConfig
    from f5app.data.prepare import DataError, prepare

    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(24000, dtype=np.float32), 24000)
    (tmp_path / "metadata.csv").write_text("audio_file|text\nwavs/a.wav|hello\n", encoding="utf-8")
    (tmp_path / "my_vocab.txt").write_bytes(b" \n\xff\n")
    data = DataConfig(path=str(tmp_path), tokenizer="custom", vocab_path=str(tmp_path / "my_vocab.txt"))
    with pytest.raises(DataError, match="my_vocab.txt is damaged: byte 2 is not UTF-8"):
        prepare(data)
