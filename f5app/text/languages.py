"""What each language calls the things a normaliser says: the words around the numbers.

The numbers themselves are spelled by ``num2words`` (cardinals, ordinals, years); this module
holds only the vocabulary a number library does not: how a language writes numbers (separators),
its month names, currency and unit names, common abbreviations and symbols. One
:class:`Language` per supported language; :func:`language_for` maps a code (``pt-BR``, ``pt_BR``,
``en-US``, ``de``) to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Currency:
    one: str  # the unit, singular ("dollar")
    many: str  # plural ("dollars")
    cent_one: str  # the hundredth, singular ("cent")
    cent_many: str
    scale_joiner: str = ""  # between a scale word and the unit: pt "dois milhões de reais"


@dataclass(frozen=True)
class Language:
    code: str  # the canonical code, as logged: en, pt-BR, es, fr, de
    num2words: str  # num2words' lang= for it
    decimal_mark: str  # "." or ","
    group_mark: str  # thousands: "," or "."
    point: str  # the decimal mark said aloud
    minus: str
    percent: str
    and_word: str  # between the whole and the cents of an amount
    months: tuple[str, ...]  # January first
    day_first: bool  # 14/03/2024 (True) or 03/14/2024 (False)
    currencies: dict[str, Currency]  # symbol or code as written -> names
    units: dict[str, tuple[str, str]]  # symbol as written -> (singular, plural)
    abbreviations: dict[str, str]  # as written (with its dot) -> said
    symbols: dict[str, str] = field(default_factory=dict)  # & + ... between words
    scales: tuple[str, ...] = ()  # words after a number that multiply it ("million"): "$2.5 million"
    year_cues: tuple[str, ...] = ()  # words after which a 4-digit number is a year ("in 1999")
    time_words: Optional[dict[str, str]] = None  # hour/hours/minute forms (see spoken.py: say_time)


_EN_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"), "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"), "l": ("liter", "liters"), "L": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"), "°": ("degree", "degrees"), "mi": ("mile", "miles"),
    "ft": ("foot", "feet"), "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"), "TB": ("terabyte", "terabytes"),
    "kB": ("kilobyte", "kilobytes"), "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"),
    "GHz": ("gigahertz", "gigahertz"), "kW": ("kilowatt", "kilowatts"), "W": ("watt", "watts"),
    "V": ("volt", "volts"), "ms": ("millisecond", "milliseconds"), "s": ("second", "seconds"),
    "min": ("minute", "minutes"), "h": ("hour", "hours"),
}

_PT_UNITS = {
    "km/h": ("quilômetro por hora", "quilômetros por hora"), "km": ("quilômetro", "quilômetros"),
    "m": ("metro", "metros"), "cm": ("centímetro", "centímetros"), "mm": ("milímetro", "milímetros"),
    "kg": ("quilo", "quilos"), "g": ("grama", "gramas"), "mg": ("miligrama", "miligramas"),
    "l": ("litro", "litros"), "L": ("litro", "litros"), "ml": ("mililitro", "mililitros"), "mL": ("mililitro", "mililitros"),
    "°C": ("grau Celsius", "graus Celsius"), "ºC": ("grau Celsius", "graus Celsius"), "°": ("grau", "graus"),
    "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"), "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"), "kW": ("quilowatt", "quilowatts"), "W": ("watt", "watts"), "V": ("volt", "volts"),
    "ms": ("milissegundo", "milissegundos"), "s": ("segundo", "segundos"), "min": ("minuto", "minutos"),
    "ha": ("hectare", "hectares"),
}

_ES_UNITS = {
    "km/h": ("kilómetro por hora", "kilómetros por hora"), "km": ("kilómetro", "kilómetros"),
    "m": ("metro", "metros"), "cm": ("centímetro", "centímetros"), "mm": ("milímetro", "milímetros"),
    "kg": ("kilo", "kilos"), "g": ("gramo", "gramos"), "mg": ("miligramo", "miligramos"),
    "l": ("litro", "litros"), "L": ("litro", "litros"), "ml": ("mililitro", "mililitros"),
    "°C": ("grado centígrado", "grados centígrados"), "ºC": ("grado centígrado", "grados centígrados"), "°": ("grado", "grados"),
    "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"), "s": ("segundo", "segundos"),
    "min": ("minuto", "minutos"), "h": ("hora", "horas"),
}

_FR_UNITS = {
    "km/h": ("kilomètre-heure", "kilomètres-heure"), "km": ("kilomètre", "kilomètres"), "m": ("mètre", "mètres"),
    "cm": ("centimètre", "centimètres"), "mm": ("millimètre", "millimètres"), "kg": ("kilo", "kilos"),
    "g": ("gramme", "grammes"), "mg": ("milligramme", "milligrammes"), "l": ("litre", "litres"), "L": ("litre", "litres"),
    "ml": ("millilitre", "millilitres"), "cl": ("centilitre", "centilitres"), "°C": ("degré Celsius", "degrés Celsius"),
    "°": ("degré", "degrés"), "Go": ("gigaoctet", "gigaoctets"), "Mo": ("mégaoctet", "mégaoctets"),
    "s": ("seconde", "secondes"), "min": ("minute", "minutes"),
}

_DE_UNITS = {
    "km/h": ("Kilometer pro Stunde", "Kilometer pro Stunde"), "km": ("Kilometer", "Kilometer"), "m": ("Meter", "Meter"),
    "cm": ("Zentimeter", "Zentimeter"), "mm": ("Millimeter", "Millimeter"), "kg": ("Kilogramm", "Kilogramm"),
    "g": ("Gramm", "Gramm"), "mg": ("Milligramm", "Milligramm"), "l": ("Liter", "Liter"), "L": ("Liter", "Liter"),
    "ml": ("Milliliter", "Milliliter"), "°C": ("Grad Celsius", "Grad Celsius"), "°": ("Grad", "Grad"),
    "GB": ("Gigabyte", "Gigabyte"), "MB": ("Megabyte", "Megabyte"), "s": ("Sekunde", "Sekunden"),
    "min": ("Minute", "Minuten"), "Std.": ("Stunde", "Stunden"), "h": ("Stunde", "Stunden"),
}

ENGLISH = Language(
    code="en", num2words="en", decimal_mark=".", group_mark=",", point="point", minus="minus", percent="percent",
    and_word="and",
    months=("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
            "November", "December"),
    day_first=False,
    currencies={
        "US$": Currency("dollar", "dollars", "cent", "cents"), "$": Currency("dollar", "dollars", "cent", "cents"),
        "USD": Currency("dollar", "dollars", "cent", "cents"), "€": Currency("euro", "euros", "cent", "cents"),
        "EUR": Currency("euro", "euros", "cent", "cents"), "£": Currency("pound", "pounds", "penny", "pence"),
        "GBP": Currency("pound", "pounds", "penny", "pence"), "¥": Currency("yen", "yen", "sen", "sen"),
        "R$": Currency("real", "reais", "centavo", "centavos"), "BRL": Currency("real", "reais", "centavo", "centavos"),
    },
    units=_EN_UNITS,
    abbreviations={
        "Dr.": "doctor", "Mr.": "mister", "Mrs.": "missus", "Ms.": "miz", "Prof.": "professor", "Jr.": "junior",
        "Sr.": "senior", "St.": "saint", "Mt.": "mount", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
        "i.e.": "that is", "approx.": "approximately", "No.": "number", "Ave.": "avenue", "Jan.": "January",
        "Feb.": "February", "Aug.": "August", "Sept.": "September", "Oct.": "October", "Nov.": "November",
        "Dec.": "December", "a.m.": "a m", "p.m.": "p m",
    },
    symbols={"&": "and", "+": "plus", "@": "at", "#": "number", "=": "equals"},
    scales=("thousand", "million", "billion", "trillion"),
    year_cues=("in", "since", "from", "until", "till", "by", "of", "before", "after", "around", "circa", "year", "early",
               "late", "mid", "the"),
)

PORTUGUESE_BR = Language(
    code="pt-BR", num2words="pt_BR", decimal_mark=",", group_mark=".", point="vírgula", minus="menos",
    percent="por cento", and_word="e",
    months=("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro",
            "novembro", "dezembro"),
    day_first=True,
    currencies={
        "R$": Currency("real", "reais", "centavo", "centavos", "de"), "BRL": Currency("real", "reais", "centavo", "centavos", "de"),
        "US$": Currency("dólar", "dólares", "centavo", "centavos", "de"), "$": Currency("dólar", "dólares", "centavo", "centavos", "de"),
        "USD": Currency("dólar", "dólares", "centavo", "centavos", "de"), "€": Currency("euro", "euros", "centavo", "centavos", "de"),
        "EUR": Currency("euro", "euros", "centavo", "centavos", "de"), "£": Currency("libra", "libras", "pêni", "pence", "de"),
    },
    units=_PT_UNITS,
    abbreviations={
        "Sr.": "senhor", "Sra.": "senhora", "Srta.": "senhorita", "Dr.": "doutor", "Dra.": "doutora",
        "Prof.": "professor", "Profa.": "professora", "Av.": "avenida", "etc.": "etcétera", "p.ex.": "por exemplo",
        "n.º": "número", "nº": "número", "Nº": "número", "tel.": "telefone", "pág.": "página", "aprox.": "aproximadamente",
        "Ltda.": "limitada", "V.Sa.": "vossa senhoria", "vs.": "versus",
    },
    symbols={"&": "e", "+": "mais", "@": "arroba", "=": "igual a", "#": "número"},
    scales=("mil", "milhão", "milhões", "bilhão", "bilhões", "trilhão", "trilhões"),
    time_words={"hour": "hora", "hours": "horas", "joiner": "e"},
)

SPANISH = Language(
    code="es", num2words="es", decimal_mark=",", group_mark=".", point="coma", minus="menos", percent="por ciento",
    and_word="con",
    months=("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
            "noviembre", "diciembre"),
    day_first=True,
    currencies={
        "€": Currency("euro", "euros", "céntimo", "céntimos", "de"), "EUR": Currency("euro", "euros", "céntimo", "céntimos", "de"),
        "$": Currency("dólar", "dólares", "centavo", "centavos", "de"), "US$": Currency("dólar", "dólares", "centavo", "centavos", "de"),
        "USD": Currency("dólar", "dólares", "centavo", "centavos", "de"), "£": Currency("libra", "libras", "penique", "peniques", "de"),
    },
    units=_ES_UNITS,
    abbreviations={
        "Sr.": "señor", "Sra.": "señora", "Srta.": "señorita", "Dr.": "doctor", "Dra.": "doctora", "Ud.": "usted",
        "Uds.": "ustedes", "etc.": "etcétera", "p.ej.": "por ejemplo", "Av.": "avenida", "aprox.": "aproximadamente",
        "nº": "número", "n.º": "número",
    },
    symbols={"&": "y", "+": "más", "@": "arroba", "=": "igual a", "#": "número"},
    scales=("mil", "millón", "millones"),
    time_words={"hour": "hora", "hours": "horas", "joiner": "y"},
)

FRENCH = Language(
    code="fr", num2words="fr", decimal_mark=",", group_mark=".", point="virgule", minus="moins", percent="pour cent",
    and_word="et",
    months=("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
            "novembre", "décembre"),
    day_first=True,
    currencies={
        "€": Currency("euro", "euros", "centime", "centimes", "d'"), "EUR": Currency("euro", "euros", "centime", "centimes", "d'"),
        "$": Currency("dollar", "dollars", "cent", "cents", "de"), "USD": Currency("dollar", "dollars", "cent", "cents", "de"),
        "£": Currency("livre", "livres", "penny", "pence", "de"),
    },
    units=_FR_UNITS,
    abbreviations={
        "M.": "monsieur", "MM.": "messieurs", "Mme": "madame", "Mmes": "mesdames", "Mlle": "mademoiselle",
        "Dr": "docteur", "Pr": "professeur", "etc.": "et cetera", "av.": "avenue", "bd": "boulevard",
        "n°": "numéro", "p.ex.": "par exemple", "env.": "environ",
    },
    symbols={"&": "et", "+": "plus", "@": "arobase", "=": "égale", "#": "numéro"},
    scales=("mille", "million", "millions", "milliard", "milliards"),
    time_words={"hour": "heure", "hours": "heures", "joiner": ""},
)

GERMAN = Language(
    code="de", num2words="de", decimal_mark=",", group_mark=".", point="Komma", minus="minus", percent="Prozent",
    and_word="und",
    months=("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
            "November", "Dezember"),
    day_first=True,
    currencies={
        "€": Currency("Euro", "Euro", "Cent", "Cent"), "EUR": Currency("Euro", "Euro", "Cent", "Cent"),
        "$": Currency("Dollar", "Dollar", "Cent", "Cent"), "USD": Currency("Dollar", "Dollar", "Cent", "Cent"),
        "£": Currency("Pfund", "Pfund", "Penny", "Pence"), "CHF": Currency("Franken", "Franken", "Rappen", "Rappen"),
    },
    units=_DE_UNITS,
    abbreviations={
        "Dr.": "Doktor", "Prof.": "Professor", "Hr.": "Herr", "Fr.": "Frau", "z.B.": "zum Beispiel",
        "z. B.": "zum Beispiel", "usw.": "und so weiter", "bzw.": "beziehungsweise", "Nr.": "Nummer", "ca.": "circa",
        "d.h.": "das heißt", "u.a.": "unter anderem", "Str.": "Straße", "inkl.": "inklusive", "ggf.": "gegebenenfalls",
    },
    symbols={"&": "und", "+": "plus", "@": "at", "=": "gleich", "#": "Nummer"},
    scales=("Tausend", "Million", "Millionen", "Milliarde", "Milliarden"),
    year_cues=("im", "Jahr", "Jahre", "seit", "bis", "von", "vor", "nach", "um", "ab"),
    time_words={"hour": "Uhr", "hours": "Uhr", "joiner": ""},
)

LANGUAGES: dict[str, Language] = {lang.code.lower(): lang for lang in (ENGLISH, PORTUGUESE_BR, SPANISH, FRENCH, GERMAN)}
#: A bare language code means its most spoken variety among the ones written here.
_ALIASES = {"pt": "pt-br"}


def canonical_code(code: str) -> str:
    """``pt_BR``, ``PT-br`` -> ``pt-br``; ``en-US`` -> ``en-us`` (lower case, hyphenated)."""
    return code.strip().replace("_", "-").lower()


def language_for(code: Optional[str]) -> Optional[Language]:
    """The :class:`Language` for ``code`` (its region tried, then the bare language), or None."""
    if not code:
        return None
    wanted = canonical_code(code)
    for candidate in (wanted, _ALIASES.get(wanted), wanted.split("-")[0], _ALIASES.get(wanted.split("-")[0])):
        if candidate and candidate in LANGUAGES:
            return LANGUAGES[candidate]
    return None
