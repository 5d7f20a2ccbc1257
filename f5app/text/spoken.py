"""Written forms -> spoken words for one language, numbers spelled by ``num2words``.

Passes run in a fixed order, each replacing what it recognises with words (words hold no digits,
so a later pass never re-reads an earlier one's output):

abbreviations -> currency -> dates -> times -> percentages -> units -> ordinals -> years ->
decimals and cardinals -> symbols.

Why num2words and not a WFST normaliser: see docs/text_norm.md (measured on this machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from num2words import num2words

from f5app.text.languages import Currency, Language

@dataclass(frozen=True)
class _Number:
    whole: int
    fraction: str  # digits after the decimal mark, "" when none
    negative: bool = False

    @property
    def is_one(self) -> bool:
        return self.whole == 1 and not self.fraction.strip("0")


class SpokenForms:
    """``say(text)``: ``text`` with its numbers, amounts, dates, times and abbreviations in words."""

    def __init__(self, language: Language):
        self.language = language
        lang = language
        group = re.escape(lang.group_mark)
        decimal = re.escape(lang.decimal_mark)
        # 1,234,567.89 (en) or 1.234.567,89 (pt, es, fr, de); fr also groups with (narrow) no-break spaces
        groups = rf"\d{{1,3}}(?:{group}\d{{3}})+" + (r"|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)" if lang.code == "fr" else "")
        self._number = rf"(?:{groups}|\d+)(?:{decimal}\d+)?"
        number = self._number
        scales = "|".join(map(re.escape, lang.scales))
        scale = rf"(?:\s+(?P<scale>{scales})\b)?" if scales else ""
        symbols = "|".join(sorted(map(re.escape, lang.currencies), key=len, reverse=True))
        units = "|".join(sorted(map(re.escape, lang.units), key=len, reverse=True))
        months = "|".join(lang.months)
        hour_words = [w for w in (lang.time_words or {}).values() if w]
        # "17:30 Uhr": the hour word written after the time is said once, by the time
        hour_tail = rf"(?P<tail>\s+(?:{'|'.join(map(re.escape, hour_words))})\b)?" if hour_words else ""
        self._passes: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
            (self._words_pattern(lang.abbreviations), lambda m: self._abbreviation(m)),
            (re.compile(rf"(?<![\w$])(?P<sym>{symbols})\s?(?P<neg>-)?(?P<num>{number}){scale}(?![\w])"), self._amount),
            (re.compile(rf"(?<![\w.,])(?P<neg>-)?(?P<num>{number}){scale}\s?(?P<sym>{symbols})(?![\w$])"), self._amount),
            (re.compile(r"(?<![\d/.-])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d|[/.-]\d)"), self._iso_date),
            (re.compile(r"(?<![\d/.])(?P<a>\d{1,2})[/.](?P<b>\d{1,2})[/.](?P<y>\d{4}|\d{2})(?![\d/]|\.\d)"), self._numeric_date),
            (re.compile(rf"\b(?P<month>{months})\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(?P<y>\d{{4}}))?(?!\d)", re.IGNORECASE),
             self._month_day),
            (re.compile(rf"(?<![\d.])(?P<d>\d{{1,2}})(?:st|nd|rd|th|\.|º|er)?\s+(?:de\s+)?(?P<month>{months})\b(?:\s+(?:de\s+)?(?P<y>\d{{4}}))?",
                        re.IGNORECASE), self._day_month),
            (re.compile(r"(?<![\d:.,])(?P<h>\d{1,2})(?::(?P<m>\d{2})|h(?P<hm>\d{2})?)(?!\d)(?:\s*(?P<ampm>[ap]\.?\s?m\.?(?!\w)))?"
                        + hour_tail, re.IGNORECASE),
             self._time),
            (re.compile(r"(?<![\w.,])(?P<y>1[1-9]\d0|20\d0)s\b"), self._decade),
            (re.compile(rf"(?<![\w.,])(?P<neg>-)?(?P<num>{number})\s?%"), self._percent),
            (re.compile(rf"(?<![\w.,])(?P<neg>-)?(?P<num>{number})\s?(?P<unit>{units})(?![\w/])"), self._unit),
            (re.compile(r"(?<![\w#])#(?=\d)"), lambda m: self.language.symbols.get("#", "#") + " "),
            (self._ordinal_pattern(), self._ordinal),
            (re.compile(r"(?<![\w.,])(?P<y>1[1-9]\d\d|20\d\d)(?![\w.,]\d|\w)"), self._year_or_number),
            (re.compile(rf"(?<![\w.,])(?P<neg>(?<![\w-])-)?(?P<num>{number})(?!\d)"), self._cardinal),
            (re.compile(r"(?<=\s)(?P<sym>[&+@=])(?=\s)"), self._symbol),
        ]

    # ------------------------------------------------------------------ the entry point

    def say(self, text: str) -> str:
        for pattern, replace in self._passes:
            text = pattern.sub(replace, text)
        return re.sub(r"[ \t]+", " ", text).strip()

    # ------------------------------------------------------------------ numbers

    def words(self, number: int, to: str = "cardinal") -> str:
        """num2words' spelling without its commas (they would be read as pauses)."""
        return num2words(number, lang=self.language.num2words, to=to).replace(",", "")

    def _parse(self, written: str, negative: bool = False) -> _Number:
        lang = self.language
        whole, _, fraction = written.partition(lang.decimal_mark)
        whole = re.sub(r"[^\d]", "", whole)
        return _Number(int(whole), fraction, negative)

    def _say_number(self, number: _Number) -> str:
        lang = self.language
        said = self.words(number.whole)
        if number.fraction:
            digits = number.fraction
            # English reads the digits one by one ("three point one four"); the others read a short
            # fraction as a number ("três vírgula catorze") unless it starts with a zero.
            if lang.code == "en" or digits.startswith("0") or len(digits) > 3:
                fraction = " ".join(self.words(int(d)) for d in digits)
            else:
                fraction = self.words(int(digits))
            said = f"{said} {lang.point} {fraction}"
        return f"{lang.minus} {said}" if number.negative else said

    def _cardinal(self, match: re.Match[str]) -> str:
        written = match.group("num")
        lang = self.language
        # "1.5" in a comma-decimal language is a decimal written the English way, not a thousands group
        if lang.decimal_mark == "," and re.fullmatch(r"\d+\.\d{1,2}|\d+\.\d{4,}", written):
            whole, fraction = written.split(".")
            return self._spaced(match, self._say_number(_Number(int(whole), fraction, bool(match.group("neg")))))
        return self._spaced(match, self._say_number(self._parse(written, bool(match.group("neg")))))

    @staticmethod
    def _spaced(match: re.Match[str], said: str) -> str:
        """``said`` with a space where it would otherwise touch a word character ("5x" -> "five x")."""
        text, start, end = match.string, match.start(), match.end()
        before = " " if start > 0 and text[start - 1].isalnum() else ""
        after = " " if end < len(text) and text[end].isalnum() else ""
        return f"{before}{said}{after}"

    # ------------------------------------------------------------------ amounts, percentages, units

    def _amount(self, match: re.Match[str]) -> str:
        lang = self.language
        currency: Currency = lang.currencies[match.group("sym")]
        number = self._parse(match.group("num"), bool(match.group("neg")))
        scale = match.group("scale")
        if scale:
            joiner = f" {currency.scale_joiner}" if currency.scale_joiner and scale not in ("mil", "mille", "Tausend", "thousand") else ""
            return self._spaced(match, f"{self._say_number(number)} {scale}{joiner} {currency.many}".replace("' ", "'"))
        cents = int((number.fraction + "00")[:2]) if number.fraction else 0
        parts = []
        if number.whole or not cents:
            unit = currency.one if number.whole == 1 else currency.many
            parts.append(f"{self._say_number(_Number(number.whole, ''))} {unit}")
        if cents:
            parts.append(f"{self.words(cents)} {currency.cent_one if cents == 1 else currency.cent_many}")
        said = f" {lang.and_word} ".join(parts)
        return self._spaced(match, f"{lang.minus} {said}" if number.negative else said)

    def _percent(self, match: re.Match[str]) -> str:
        number = self._parse(match.group("num"), bool(match.group("neg")))
        return self._spaced(match, f"{self._say_number(number)} {self.language.percent}")

    def _unit(self, match: re.Match[str]) -> str:
        number = self._parse(match.group("num"), bool(match.group("neg")))
        one, many = self.language.units[match.group("unit")]
        return self._spaced(match, f"{self._say_number(number)} {one if number.is_one else many}")

    # ------------------------------------------------------------------ dates and times

    def _day(self, day: int, *, after_article: bool = False) -> str:
        code = self.language.code
        if code == "en":
            return self.words(day, "ordinal")
        if code == "de":
            return self.words(day, "ordinal") + ("n" if after_article else "r")
        if day == 1:  # pt "primeiro de maio", es "primero de mayo", fr "premier mai"
            return self.words(1, "ordinal")
        return self.words(day)

    def _year(self, year: int) -> str:
        code = self.language.code
        if code in ("en", "de"):  # "nineteen ninety-nine", "neunzehnhundertneunundneunzig"
            return self.words(year, "year")
        return self.words(year)  # pt, es, fr read years as numbers

    def _date(self, day: int, month: int, year: Optional[int], match: re.Match[str]) -> str:
        lang = self.language
        name = lang.months[month - 1]
        year_said = self._year(year) if year is not None else None
        if lang.code == "en":
            said = f"{name} {self._day(day)}" + (f" {year_said}" if year_said else "")
        elif lang.code in ("pt-BR", "es"):
            said = f"{self._day(day)} de {name}" + (f" de {year_said}" if year_said else "")
        elif lang.code == "de":
            after_article = bool(re.search(r"\b(am|vom|zum|bis zum|dem|den)\s*$", match.string[: match.start()], re.IGNORECASE))
            said = f"{self._day(day, after_article=after_article)} {name}" + (f" {year_said}" if year_said else "")
        else:
            said = f"{self._day(day)} {name}" + (f" {year_said}" if year_said else "")
        return self._spaced(match, said)

    def _iso_date(self, match: re.Match[str]) -> str:
        year, month, day = int(match.group("y")), int(match.group("m")), int(match.group("d"))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return match.group(0)
        return self._date(day, month, year, match)

    def _numeric_date(self, match: re.Match[str]) -> str:
        a, b = int(match.group("a")), int(match.group("b"))
        day, month = (a, b) if self.language.day_first else (b, a)
        written_year = match.group("y")
        year = int(written_year) + (2000 if int(written_year) < 50 else 1900) if len(written_year) == 2 else int(written_year)
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return match.group(0)
        return self._date(day, month, year, match)

    def _month_index(self, name: str) -> int:
        return [m.lower() for m in self.language.months].index(name.lower()) + 1

    def _month_day(self, match: re.Match[str]) -> str:
        if self.language.code != "en":  # "março 14" is not how the others write dates: leave it to the cardinal pass
            return match.group(0)
        day = int(match.group("d"))
        if not 1 <= day <= 31:
            return match.group(0)
        year = match.group("y")
        return self._date(day, self._month_index(match.group("month")), int(year) if year else None, match)

    def _day_month(self, match: re.Match[str]) -> str:
        day = int(match.group("d"))
        if not 1 <= day <= 31:
            return match.group(0)
        year = match.group("y")
        return self._date(day, self._month_index(match.group("month")), int(year) if year else None, match)

    def _time(self, match: re.Match[str]) -> str:
        lang = self.language
        hour = int(match.group("h"))
        minute_text = match.group("m") or match.group("hm")
        minute = int(minute_text) if minute_text else 0
        ampm = match.group("ampm")
        if match.group("m") is None and lang.code == "en":
            return match.group(0)  # "5h" is not an English time
        if hour > 24 or minute > 59:
            return match.group(0)
        if lang.code == "en":
            if minute == 0:
                said = self.words(hour) + ("" if ampm else " o'clock")
            elif minute < 10:
                said = f"{self.words(hour)} oh {self.words(minute)}"
            else:
                said = f"{self.words(hour)} {self.words(minute)}"
            if ampm:
                said += " " + ("a m" if ampm.lower().startswith("a") else "p m")
                rest = match.string[match.end():].lstrip()
                if ampm.endswith(".") and (not rest or rest[0].isupper()):
                    said += "."  # "at 5 p.m. Then": the abbreviation's dot also ended the sentence
            return self._spaced(match, said)
        words = lang.time_words or {}
        hour_said = self._feminine(self.words(hour)) if lang.code in ("pt-BR", "es", "fr") else self.words(hour)
        if lang.code == "de" and hour == 1:
            hour_said = "ein"
        if lang.code in ("fr", "de"):
            said = f"{hour_said} {words['hours'] if hour != 1 else words['hour']}" + (f" {self.words(minute)}" if minute else "")
        elif minute == 0:
            said = f"{hour_said} {words['hours'] if hour != 1 else words['hour']}"
        else:
            said = f"{hour_said} {words['joiner']} {self.words(minute)}"
        tail = match.groupdict().get("tail")
        if tail and tail.strip() not in said.split():
            said += tail
        return self._spaced(match, said)

    def _feminine(self, said: str) -> str:
        """Hours are feminine in pt ("duas horas"), es ("una"), fr ("une heure")."""
        code = self.language.code
        pairs = {"pt-BR": (("um", "uma"), ("dois", "duas")), "es": (("uno", "una"), ("veintiuno", "veintiuna")),
                 "fr": (("un", "une"),)}[code]
        for masculine, feminine in pairs:
            said = re.sub(rf"(?<![\w-]){masculine}$", feminine, said)
        return said

    # ------------------------------------------------------------------ ordinals and years

    def _ordinal_pattern(self) -> re.Pattern[str]:
        code = self.language.code
        if code == "en":
            return re.compile(r"(?<![\w.,])(?P<n>\d+)(?P<suffix>st|nd|rd|th)\b")
        if code == "fr":
            return re.compile(r"(?<![\w.,])(?P<n>\d+)(?P<suffix>ère|re|er|ème|e)(?!\w)")
        if code == "de":
            return re.compile(r"(?!x)x")  # "3." is a sentence end as often as an ordinal: only dates read it
        return re.compile(r"(?<![\w.,])(?P<n>\d+)\.?(?P<suffix>[ºª°])(?!\w)")

    def _ordinal(self, match: re.Match[str]) -> str:
        number, suffix = int(match.group("n")), match.group("suffix")
        said = self.words(number, "ordinal")
        code = self.language.code
        if code in ("pt-BR", "es") and suffix == "ª":
            said = " ".join(w[:-1] + "a" if w.endswith("o") else w for w in said.split())
        elif code == "fr" and suffix in ("re", "ère") and number == 1:
            said = "première"
        return self._spaced(match, said)

    def _decade(self, match: re.Match[str]) -> str:
        """English "the 1990s" -> "the nineteen nineties"; the other languages do not write decades so."""
        if self.language.code != "en":
            return match.group(0)
        said = self._year(int(match.group("y")))
        return self._spaced(match, said[:-1] + "ies" if said.endswith("y") else said + "s")

    def _year_or_number(self, match: re.Match[str]) -> str:
        """A four-digit number after a cue word ("in 1999", "seit 1990") is a year; else a number."""
        lang = self.language
        year = int(match.group("y"))
        before = match.string[: match.start()].split()
        cue = bool(before) and before[-1].strip("(\"'").lower() in {c.lower() for c in lang.year_cues}
        return self._spaced(match, self._year(year) if cue else self.words(year))

    # ------------------------------------------------------------------ words and symbols

    def _words_pattern(self, table: dict[str, str]) -> re.Pattern[str]:
        if not table:
            return re.compile(r"(?!x)x")
        alternatives = "|".join(sorted(map(re.escape, table), key=len, reverse=True))
        return re.compile(rf"(?<![\w.])(?:{alternatives})(?!\w)")

    def _abbreviation(self, match: re.Match[str]) -> str:
        written = match.group(0)
        said = self.language.abbreviations[written]
        # the dot of an abbreviation that ends the text also ends the sentence
        if written.endswith(".") and not match.string[match.end():].strip():
            said += "."
        return said

    def _symbol(self, match: re.Match[str]) -> str:
        symbol = match.group("sym")
        return self._spaced(match, self.language.symbols.get(symbol, symbol))

