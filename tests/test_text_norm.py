"""Text read as a person would: what each language's normaliser says, the lexicon, and the choice.

The table is the specification: written text -> what the voice is given to say, per language.
"""

from __future__ import annotations

import logging

import pytest

from f5app.config import TextNormConfig
from f5app.errors import UserError
from f5app.text.lexicon import read_lexicon
from f5app.text.normalise import build_normaliser, recorded_language

SPOKEN = [
    # en
    ('en', 'I have 3 cats.', 'I have three cats.'),
    ('en', 'It costs $1,234.56.', 'It costs one thousand two hundred and thirty-four dollars and fifty-six cents.'),
    ('en', 'Only $1.', 'Only one dollar.'),
    ('en', 'About 7.5% of 2,000 people.', 'About seven point five percent of two thousand people.'),
    ('en', 'She was born on 3/14/1999.', 'She was born on March fourteenth nineteen ninety-nine.'),
    ('en', 'On March 5th, 2024.', 'On March fifth twenty twenty-four.'),
    ('en', 'Meet me at 10:30 pm.', 'Meet me at ten thirty p m.'),
    ('en', 'It starts at 9:05 a.m.', 'It starts at nine oh five a m.'),
    ('en', 'He finished 21st.', 'He finished twenty-first.'),
    ('en', 'The 2nd and 3rd places.', 'The second and third places.'),
    ('en', 'Dr. Jones vs. Mr. Brown.', 'doctor Jones versus mister Brown.'),
    ('en', 'It weighs 2.5 kg.', 'It weighs two point five kilograms.'),
    ('en', 'It is 1 km away.', 'It is one kilometer away.'),
    ('en', 'In 1984, prices rose.', 'In nineteen eighty-four, prices rose.'),
    ('en', '£20 and €3.50.', 'twenty pounds and three euros and fifty cents.'),
    ('en', 'Temperatures of -3 degrees.', 'Temperatures of minus three degrees.'),
    ('en', 'Back in the 1980s.', 'Back in the nineteen eighties.'),
    ('en', 'It cost $2.5 billion.', 'It cost two point five billion dollars.'),
    ('en', 'We met on 2024-01-31.', 'We met on January thirty-first twenty twenty-four.'),
    ('en', 'Item #5 costs 3 + 4 dollars.', 'Item number five costs three plus four dollars.'),
    ('en', 'Pi is 3.14159.', 'Pi is three point one four one five nine.'),
    ('en', 'Hi.', 'Hi.'),
    # pt-BR
    ('pt-BR', 'Tenho 3 gatos.', 'Tenho três gatos.'),
    ('pt-BR', 'Custa R$ 1.234,56.', 'Custa mil duzentos e trinta e quatro reais e cinquenta e seis centavos.'),
    ('pt-BR', 'Só R$ 1,00.', 'Só um real.'),
    ('pt-BR', 'Cerca de 7,5% de 2.000 pessoas.', 'Cerca de sete vírgula cinco por cento de dois mil pessoas.'),
    ('pt-BR', 'Ela nasceu em 14/03/1999.', 'Ela nasceu em catorze de março de mil novecentos e noventa e nove.'),
    ('pt-BR', 'Chegou às 10:30.', 'Chegou às dez e trinta.'),
    ('pt-BR', 'O trem sai às 9h05.', 'O trem sai às nove e cinco.'),
    ('pt-BR', 'Começa às 8h.', 'Começa às oito horas.'),
    ('pt-BR', 'Terminou em 21º lugar.', 'Terminou em vigésimo primeiro lugar.'),
    ('pt-BR', 'A 2ª edição.', 'A segunda edição.'),
    ('pt-BR', 'O Dr. Souza e a Sra. Lima.', 'O doutor Souza e a senhora Lima.'),
    ('pt-BR', 'Pesa 2,5 kg.', 'Pesa dois vírgula cinco quilos.'),
    ('pt-BR', 'Fica a 1 km.', 'Fica a um quilômetro.'),
    ('pt-BR', 'Um dia de 25 °C.', 'Um dia de vinte e cinco graus Celsius.'),
    ('pt-BR', 'Em 1984, os preços subiram.', 'Em mil novecentos e oitenta e quatro, os preços subiram.'),
    ('pt-BR', 'US$ 20 e € 3,50.', 'vinte dólares e três euros e cinquenta centavos.'),
    ('pt-BR', 'Temperaturas de -3 graus.', 'Temperaturas de menos três graus.'),
    ('pt-BR', 'Custou R$ 2,5 bilhões.', 'Custou dois vírgula cinco bilhões de reais.'),
    ('pt-BR', 'Foi em 1º de janeiro de 2000.', 'Foi em primeiro de janeiro de dois mil.'),
    ('pt-BR', 'Moro na Av. Paulista, nº 1000.', 'Moro na avenida Paulista, número mil.'),
    ('pt-BR', 'Pi vale 3,14.', 'Pi vale três vírgula catorze.'),
    ('pt-BR', 'Às 21h15 do dia 25/12/2023.', 'Às vinte e uma e quinze do dia vinte e cinco de dezembro de dois mil e vinte e três.'),
    # es
    ('es', 'Tengo 3 gatos.', 'Tengo tres gatos.'),
    ('es', 'Cuesta 1.234,56 €.', 'Cuesta mil doscientos treinta y cuatro euros con cincuenta y seis céntimos.'),
    ('es', 'Nació el 14/03/1999.', 'Nació el catorce de marzo de mil novecientos noventa y nueve.'),
    ('es', 'A las 10:30.', 'A las diez y treinta.'),
    ('es', 'El 7,5% de la gente.', 'El siete coma cinco por ciento de la gente.'),
    ('es', 'Llegó en 2º lugar.', 'Llegó en segundo lugar.'),
    ('es', 'El Sr. Pérez y la Dra. Ruiz.', 'El señor Pérez y la doctora Ruiz.'),
    # fr
    ('fr', "J'ai 3 chats.", "J'ai trois chats."),
    ('fr', 'Ça coûte 1 234,56 €.', 'Ça coûte mille deux cent trente-quatre euros et cinquante-six centimes.'),
    ('fr', 'Né le 14/03/1999.', 'Né le quatorze mars mille neuf cent quatre-vingt-dix-neuf.'),
    ('fr', 'À 10h30.', 'À dix heures trente.'),
    ('fr', 'Il y a 7,5 % des gens.', 'Il y a sept virgule cinq pour cent des gens.'),
    ('fr', 'Il est arrivé 2e.', 'Il est arrivé deuxième.'),
    ('fr', 'M. Martin et Mme Petit.', 'monsieur Martin et madame Petit.'),
    ('fr', 'Le 1er mai.', 'Le premier mai.'),
    # de
    ('de', 'Ich habe 3 Katzen.', 'Ich habe drei Katzen.'),
    ('de', 'Es kostet 1.234,56 €.', 'Es kostet eintausendzweihundertvierunddreißig Euro und sechsundfünfzig Cent.'),
    ('de', 'Geboren am 14.03.1999.', 'Geboren am vierzehnten März neunzehnhundertneunundneunzig.'),
    ('de', 'Um 10:30 Uhr.', 'Um zehn Uhr dreißig.'),
    ('de', 'Das sind 7,5 % der Leute.', 'Das sind sieben Komma fünf Prozent der Leute.'),
    ('de', 'Dr. Weber, z.B. heute.', 'Doktor Weber, zum Beispiel heute.'),
    ('de', 'Seit 1984 wohne ich hier.', 'Seit neunzehnhundertvierundachtzig wohne ich hier.'),
]


@pytest.mark.parametrize(("language", "written", "said"), SPOKEN, ids=[f"{c}:{w}" for c, w, _ in SPOKEN])
def test_each_language_says_numbers_amounts_dates_times_and_abbreviations(language, written, said):
    assert build_normaliser(TextNormConfig(language=language)).normalise(written) == said


def test_a_text_full_of_numbers_keeps_no_digit_in_english_and_portuguese():
    english = "On 12/25/2023 at 7:45 pm, 1,250 guests paid $35.99 each (a 12.5% discount) for the 3rd time since 1998."
    portuguese = "Em 25/12/2023 às 19:45, 1.250 convidados pagaram R$ 35,99 cada (12,5% de desconto) pela 3ª vez desde 1998."
    for language, text in (("en", english), ("pt-BR", portuguese)):
        said = build_normaliser(TextNormConfig(language=language)).normalise(text)
        assert not any(ch.isdigit() for ch in said), said
        assert "$" not in said and "%" not in said


@pytest.mark.parametrize("code", ["pt", "pt_BR", "PT-br", "pt-PT"])
def test_portuguese_codes_all_reach_the_brazilian_normaliser(code):
    normaliser = build_normaliser(TextNormConfig(language=code))
    assert normaliser.name == "num2words:pt-BR"
    assert normaliser.normalise("R$ 2,00") == "dois reais"


def test_auto_without_a_normaliser_for_the_language_reads_the_text_as_written_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="f5app.text.normalise"):
        normaliser = build_normaliser(TextNormConfig(name="auto", language="ja"))
    assert normaliser.name == "none"
    assert normaliser.normalise("3時") == "3時"
    assert "no normaliser for language 'ja'" in caplog.text


def test_num2words_for_a_language_it_cannot_speak_is_an_error_naming_the_choices():
    with pytest.raises(UserError, match="no normaliser for language 'ja'.*pt-BR"):
        build_normaliser(TextNormConfig(name="num2words", language="ja"))


def test_none_reads_the_text_as_written():
    assert build_normaliser(TextNormConfig(name="none", language="en")).normalise("$5 at 3:00") == "$5 at 3:00"


def test_the_language_comes_from_the_setting_then_the_checkpoint_then_english(caplog):
    recorded = {"data": {"name": "csv_wavs"}, "eval": {"language": "pt"}, "asr": {"language": "en"}}
    assert recorded_language(recorded) == "pt"
    assert recorded_language({"data": {"language": "de"}, "eval": {"language": "pt"}}) == "de"
    assert recorded_language({"data": {"name": "demo"}}) is None
    assert build_normaliser(TextNormConfig(), recorded_language(recorded)).name == "num2words:pt-BR"
    assert build_normaliser(TextNormConfig(language="es"), "pt").name == "num2words:es"
    with caplog.at_level(logging.INFO, logger="f5app.text.normalise"):
        assert build_normaliser(TextNormConfig(), None).name == "num2words:en"
    assert "default" in caplog.text


def test_the_lexicon_applies_before_the_normaliser(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text(
        "# names and acronyms\n"
        "Nguyen = Win\n"
        "SQL = sequel\n"
        "/(?i)\\bf5-tts\\b/ = F five T T S\n"
        "/(\\d+)x/ = \\1 times\n"
        "C3PO = C 3 P O\n",
        encoding="utf-8",
    )
    normaliser = build_normaliser(TextNormConfig(language="en", lexicon=str(lexicon)))
    assert normaliser.name == "num2words:en+lexicon"
    said = normaliser.normalise("Nguyen runs SQL on F5-TTS 2x faster; C3PO and SQLite stay.")
    assert said == "Win runs sequel on F five T T S two times faster; C three P O and SQLite stay."


def test_a_lexicon_still_applies_with_text_norm_none(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("Nguyen = Win\n", encoding="utf-8")
    normaliser = build_normaliser(TextNormConfig(name="none", lexicon=str(lexicon)))
    assert (normaliser.name, normaliser.normalise("Nguyen 2")) == ("none+lexicon", "Win 2")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [("Nguyen Win\n", r"lexicon.txt:1: expected 'WORD = how to say it'"),
     ("ok = fine\n/(unclosed/ = x\n", r"lexicon.txt:2: bad regular expression"),
     ("/a/ = \\2\n", r"lexicon.txt:1: bad regular expression")],
)
def test_a_bad_lexicon_line_is_named_with_its_file_and_line(tmp_path, content, complaint):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=complaint):
        read_lexicon(lexicon)


def test_a_missing_or_binary_lexicon_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_lexicon(tmp_path / "missing.txt")
    binary = tmp_path / "lexicon.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8"):
        read_lexicon(binary)
