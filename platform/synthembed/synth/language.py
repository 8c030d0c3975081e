"""Is each generated text in the language it was asked for? One verdict per row, per text field.

The detector is **py3langid** (0.4.x; a maintained fork of langid.py whose naive-Bayes byte n-gram model
ships inside its 4.5 MB wheel, so it works offline; numpy only, no torch). `bench/langid_compare.py`
compared five libraries that ship their model on 660 sentences of 5-30 words in 11 languages (the Tatoeba
and STSb-multi-mt copies in ../shared/data; `bench/results/langid_compare.json`):

| library    | accuracy | restricted to XLM-R codes | XLM-R codes it can output (of 93) | time per text vs pycld2 |
|------------|----------|---------------------------|-----------------------------------|-------------------------|
| py3langid  | 0.982    | **0.997**                 | 90 (not sd, su, yi)               | ~25-130x (0.1-0.7 ms)   |
| lingua     | 0.992    | 0.994                     | 66                                | ~300-3000x              |
| langid     | 0.971    | 0.973                     | 82                                | ~1000x                  |
| langdetect | 0.950    | (not restrictable)        | 54                                | ~550x                   |
| pycld2     | 0.909    | (not restrictable)        | 93                                | 1x (C, 5 us)            |

py3langid restricted to our languages is the most accurate, covers almost every XLM-R language (lingua and
langdetect lack dozens: Amharic, Khmer, Lao, Burmese, ...), is deterministic (langdetect is random unless
seeded) and at ~0.1 ms per text costs nothing beside generation; pycld2 is faster but wrong on one short
text in ten, and lingua is a 96 MB wheel.

Rules (`check_row`):

- the query side is checked against the row's `language`, the documents (`positive`, `hard_negative`)
  against the same language; for bitext the query against `src_language` and the documents against
  `tgt_language`;
- a field is **unknown**, never rejected, when the asked language has no detector code (the Romanized
  variants and Burmese in Zawgyi encoding: `ISO_CODES` maps them to None), when it has fewer than
  `MIN_LETTERS` letters (a label, a number; a Chinese, Japanese or Korean character counts as three), or
  when the detector's probability is below `MIN_CONFIDENCE`;
- a detection inside the asked language's group of close languages (`CLOSE_LANGUAGES`: Bosnian / Croatian
  / Serbian, Indonesian / Malay, ...) counts as matched: on short texts the detector cannot tell them apart,
  and rejecting a good row is worse than keeping a neighbour's;
- the row is **mismatched** when any field is, **matched** when every field is, else unknown.

The detector is restricted to the codes of `ISO_CODES` (the XLM-R languages): rows are only ever asked for
those, and leaving out its 40-odd other labels (Luxembourgish, Walloon, ...) removes confusions with them.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from dataclasses import asdict, dataclass
from typing import Literal

from synthembed.synth.languages import XLMR_LANGUAGES

Verdict = Literal["matched", "mismatched", "unknown"]
TEXT_FIELDS = ("query", "positive", "hard_negative")

# XLM-R language name (synth.languages) -> ISO 639-1 code the detector uses; None: no detector can tell it.
ISO_CODES: dict[str, str | None] = {
    "Afrikaans": "af", "Albanian": "sq", "Amharic": "am", "Arabic": "ar", "Armenian": "hy", "Assamese": "as",
    "Azerbaijani": "az", "Basque": "eu", "Belarusian": "be", "Bengali": "bn", "Bengali (Romanized)": None,
    "Bosnian": "bs", "Breton": "br", "Bulgarian": "bg", "Burmese": "my", "Burmese (Zawgyi)": None,
    "Catalan": "ca", "Chinese (Simplified)": "zh", "Chinese (Traditional)": "zh", "Croatian": "hr",
    "Czech": "cs", "Danish": "da", "Dutch": "nl", "English": "en", "Esperanto": "eo", "Estonian": "et",
    "Filipino": "tl", "Finnish": "fi", "French": "fr", "Galician": "gl", "Georgian": "ka", "German": "de",
    "Greek": "el", "Gujarati": "gu", "Hausa": "ha", "Hebrew": "he", "Hindi": "hi", "Hindi (Romanized)": None,
    "Hungarian": "hu", "Icelandic": "is", "Indonesian": "id", "Irish": "ga", "Italian": "it",
    "Japanese": "ja", "Javanese": "jv", "Kannada": "kn", "Kazakh": "kk", "Khmer": "km", "Korean": "ko",
    "Kurdish (Kurmanji)": "ku", "Kyrgyz": "ky", "Lao": "lo", "Latin": "la", "Latvian": "lv",
    "Lithuanian": "lt", "Macedonian": "mk", "Malagasy": "mg", "Malay": "ms", "Malayalam": "ml",
    "Marathi": "mr", "Mongolian": "mn", "Nepali": "ne", "Norwegian": "no", "Oriya": "or", "Oromo": "om",
    "Pashto": "ps", "Persian": "fa", "Polish": "pl", "Portuguese": "pt", "Punjabi": "pa", "Romanian": "ro",
    "Russian": "ru", "Sanskrit": "sa", "Scottish Gaelic": "gd", "Serbian": "sr", "Sindhi": "sd",
    "Sinhala": "si", "Slovak": "sk", "Slovenian": "sl", "Somali": "so", "Spanish": "es", "Sundanese": "su",
    "Swahili": "sw", "Swedish": "sv", "Tamil": "ta", "Tamil (Romanized)": None, "Telugu": "te",
    "Telugu (Romanized)": None, "Thai": "th", "Turkish": "tr", "Ukrainian": "uk", "Urdu": "ur",
    "Urdu (Romanized)": None, "Uyghur": "ug", "Uzbek": "uz", "Vietnamese": "vi", "Welsh": "cy",
    "Western Frisian": "fy", "Xhosa": "xh", "Yiddish": "yi",
}
assert set(ISO_CODES) == set(XLMR_LANGUAGES), "ISO_CODES must name every XLM-R language"

# Neighbours the detector confuses on short texts; a detection inside the asked one's group is a match.
CLOSE_LANGUAGES: tuple[frozenset[str], ...] = (
    frozenset({"bs", "hr", "sr"}), frozenset({"id", "ms", "jv", "su"}), frozenset({"no", "nb", "nn", "da"}),
    frozenset({"gl", "pt"}), frozenset({"mk", "bg"}), frozenset({"hi", "mr", "ne", "sa"}),
    frozenset({"fa", "ps"}), frozenset({"af", "nl"}),
)
# Fewer letters than this (a label, a number, a name) says too little about its language. A wide character
# (Chinese, Japanese, Korean) carries about a word, so it counts as WIDE_LETTER letters.
MIN_LETTERS = 12
WIDE_LETTER = 3
# Below this probability the detector is guessing (bench/results/langid_compare.json: errors concentrate there).
MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class FieldVerdict:
    field: str
    asked: str                 # XLM-R name asked for
    found: str | None          # detector code (None: not run)
    confidence: float
    verdict: Verdict
    why: str                   # matched / mismatched / unsupported / too_short / low_confidence


@dataclass(frozen=True)
class RowVerdict:
    verdict: Verdict
    fields: tuple[FieldVerdict, ...]

    def to_json(self) -> str:
        """The `language_verdict` column: the row's verdict and one entry per checked field."""
        return json.dumps({"verdict": self.verdict, "fields": [asdict(f) for f in self.fields]}, ensure_ascii=False)

    def detail(self) -> str:
        """The reject reason's detail: which fields came back in which language."""
        return mismatch_detail([asdict(f) for f in self.fields])


def mismatch_detail(fields: list[dict]) -> str:
    """Which fields came back in which language, from the field entries of a verdict (its `to_json` form)."""
    return "; ".join(f"{f['field']} is {f['found']} (p={f['confidence']:.2f}), asked {f['asked']} ({ISO_CODES[f['asked']]})"
                     for f in fields if f["verdict"] == "mismatched")


def side_verdicts(verdict_json: str | None) -> dict[str, Verdict]:
    """Asked language -> its side's verdict (mismatched if any field is, matched if all are, else unknown);
    a bitext row gives two entries. {} for a row that was not checked."""
    if not verdict_json:
        return {}
    by_lang: dict[str, list[str]] = {}
    for f in json.loads(verdict_json)["fields"]:
        by_lang.setdefault(f["asked"], []).append(f["verdict"])
    return {lang: _combine(vs) for lang, vs in by_lang.items()}


def _combine(verdicts: list[str]) -> Verdict:
    if "mismatched" in verdicts:
        return "mismatched"
    if verdicts and all(v == "matched" for v in verdicts):
        return "matched"
    return "unknown"


@functools.lru_cache(maxsize=1)
def _identifier():
    # Deferred and cached: the model loads in ~0.2 s, once per Ray worker process.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    known = set(ident.labels)
    ident.set_languages(sorted({c for c in ISO_CODES.values() if c and c in known}))
    return ident


def require_detector() -> None:
    """Fail with the fix when this Python lacks py3langid (an environment built before it was a dependency)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("py3langid") is None:
        raise RuntimeError(f"generate.language_check needs py3langid, which {sys.executable} does not have: "
                           "`pip install 'py3langid>=0.4,<0.5'` (or reinstall synthembed: pip install -e .), "
                           "or set generate.language_check: off")


def supported_codes() -> frozenset[str]:
    """The detector's codes among ours (after the restriction)."""
    return frozenset(_identifier().labels)


def detect(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of one text."""
    code, prob = _identifier().classify(text)
    return code, float(prob)


def _same(found: str, asked: str) -> bool:
    return found == asked or any(found in g and asked in g for g in CLOSE_LANGUAGES)


def _letters(text: str) -> int:
    return sum((WIDE_LETTER if unicodedata.east_asian_width(ch) == "W" else 1) for ch in text if ch.isalpha())


def check_text(field: str, text: str, asked: str) -> FieldVerdict:
    code = ISO_CODES.get(asked)
    if code is None or code not in supported_codes():
        return FieldVerdict(field, asked, None, 0.0, "unknown", "unsupported")
    if _letters(text) < MIN_LETTERS:
        return FieldVerdict(field, asked, None, 0.0, "unknown", "too_short")
    found, prob = detect(text)
    if prob < MIN_CONFIDENCE:
        return FieldVerdict(field, asked, found, round(prob, 3), "unknown", "low_confidence")
    verdict: Verdict = "matched" if _same(found, code) else "mismatched"
    return FieldVerdict(field, asked, found, round(prob, 3), verdict, verdict)


def asked_language(example: dict, field: str) -> str:
    """The language `field` of `example` was asked in (bitext: query = source, documents = target)."""
    if example.get("task_type") == "bitext" and example.get("src_language") and example.get("tgt_language"):
        return example["src_language"] if field == "query" else example["tgt_language"]
    return example["language"]


def check_row(example: dict) -> RowVerdict:
    """The verdict of one example row (keys of EXAMPLE_SCHEMA: query, positive, hard_negative, language, ...)."""
    fields = tuple(check_text(f, example[f], asked_language(example, f)) for f in TEXT_FIELDS if example.get(f))
    return RowVerdict(_combine([f.verdict for f in fields]), fields)
