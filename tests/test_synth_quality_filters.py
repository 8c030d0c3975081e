"""Quality filters on generated rows: the language check, decontamination against evaluation data, and
the statistics they feed (unique instructions, per-language verdicts). Real detector, real data files."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from synthembed.synth.language import check_row, side_verdicts
from synthembed.synth.validate import Validate

BOUNDS = {"short": (1, 300), "long": (20, 3000)}
STS_PH = {"unit": "sentence", "high_score": 4, "low_score": 2.5, "difficulty": "college"}


def _stsb(shared: Path, lang: str, n: int = 3) -> list[str]:
    """First sentences of the real STSb-multi-mt test file of `lang` (texts whose language is known)."""
    with gzip.open(shared / "stsb_multi_mt" / f"stsb-{lang}-test.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        rows = [r[0] for r in csv.reader(fh) if len(r[0].split()) >= 5 or lang in ("zh", "ja")]
    return rows[:n]


ARABIC = [  # written for this test: everyday Arabic sentences
    "ذهبت إلى السوق صباح اليوم لشراء الخضروات والفواكه الطازجة",
    "الطقس جميل جدا اليوم ونحن نخطط لرحلة قصيرة إلى الشاطئ",
    "يدرس أخي الهندسة في الجامعة ويحب قراءة الكتب العلمية",
]
ENGLISH = [
    "A man is playing a large flute on the stage tonight.",
    "The children walked to school together in the morning rain.",
    "She bought fresh vegetables and bread at the market today.",
]


def _engine_row(task_type: str, obj: dict, language: str, src: str = "", tgt: str = "") -> dict:
    """One engine output row as `Validate` receives it from the Ray Data pipeline."""
    return {
        "stage": "example", "request_id": f"r-{language}-{len(json.dumps(obj))}", "task_type": task_type,
        "instruction": "Retrieve semantically similar text." if task_type == "sts" else "Retrieve parallel sentences.",
        "language": language, "src_language": src, "tgt_language": tgt, "placeholders": json.dumps(STS_PH),
        "text": json.dumps(obj, ensure_ascii=False), "finish_reason": "stop", "error": None, "error_kind": None,
        "tokens_in": 10, "tokens_out": 20,
    }


def _sts(texts: list[str], language: str) -> dict:
    return _engine_row("sts", {"S1": texts[0], "S2": texts[1], "S3": texts[2]}, language)


def _validate(row: dict, mode: str = "reject") -> tuple[str, dict]:
    out = Validate("test:model", 0, False, BOUNDS, metrics=False, language_check=mode)(row)
    return out["kind"], json.loads(out["payload"])


@pytest.fixture(scope="module")
def texts(shared_data) -> dict[str, list[str]]:
    return {"German": _stsb(shared_data, "de"), "Russian": _stsb(shared_data, "ru"),
            "Chinese (Simplified)": _stsb(shared_data, "zh"), "Arabic": ARABIC, "English": ENGLISH,
            "French": _stsb(shared_data, "fr")}


# ------------------------------------------------------------------------------------- language check
@pytest.mark.parametrize("asked", ["German", "Russian", "Chinese (Simplified)", "Arabic", "English"])
def test_rows_in_the_asked_language_pass(texts, asked):
    kind, rec = _validate(_sts(texts[asked], asked))
    assert kind == "example", rec
    verdict = json.loads(rec["language_verdict"])
    assert verdict["verdict"] == "matched", verdict
    assert {f["field"] for f in verdict["fields"]} == {"query", "positive", "hard_negative"}


@pytest.mark.parametrize("asked,returned", [
    ("German", "English"),               # asked German, the model answered in English
    ("English", "Russian"),              # Cyrillic where Latin was asked
    ("Russian", "German"),
    ("Japanese", "Chinese (Simplified)"),
    ("English", "Arabic"),
    ("Arabic", "English"),
    ("Chinese (Simplified)", "English"),
])
def test_rows_in_another_language_are_rejected(texts, asked, returned):
    kind, rec = _validate(_sts(texts[returned], asked))
    assert kind == "reject", rec
    assert rec["reason"].startswith("wrong_language: "), rec["reason"]
    assert rec["raw"] and json.loads(rec["language_verdict"])["verdict"] == "mismatched"
    assert side_verdicts(rec["language_verdict"]) == {asked: "mismatched"}


def test_one_field_in_the_wrong_language_rejects_the_row(texts):
    de = texts["German"]
    kind, rec = _validate(_sts([de[0], de[1], ENGLISH[2]], "German"))
    assert kind == "reject" and "hard_negative is en" in rec["reason"], rec["reason"]


def test_bitext_checks_each_side_against_its_own_language(texts):
    de, en = texts["German"], texts["English"]
    good = _engine_row("bitext", {"S1": de[0], "S2": en[0], "S3": en[1]}, "German", "German", "English")
    kind, rec = _validate(good)
    assert kind == "example", rec
    assert side_verdicts(rec["language_verdict"]) == {"German": "matched", "English": "matched"}
    # The translation left in the source language: the document side is wrong, the query side is fine.
    untranslated = _engine_row("bitext", {"S1": de[0], "S2": de[1], "S3": en[1]}, "German", "German", "English")
    kind, rec = _validate(untranslated)
    assert kind == "reject" and rec["reason"].startswith("wrong_language"), rec
    assert side_verdicts(rec["language_verdict"]) == {"German": "matched", "English": "mismatched"}
    # Swapped sides: both are wrong.
    swapped = _engine_row("bitext", {"S1": en[0], "S2": de[0], "S3": de[1]}, "German", "German", "English")
    assert side_verdicts(_validate(swapped)[1]["language_verdict"]) == {"German": "mismatched", "English": "mismatched"}


@pytest.mark.parametrize("asked", ["Hindi (Romanized)", "Sindhi", "Burmese (Zawgyi)"])
def test_a_language_the_detector_cannot_identify_is_unknown_not_rejected(texts, asked):
    kind, rec = _validate(_sts(ENGLISH, asked))
    assert kind == "example", rec
    verdict = json.loads(rec["language_verdict"])
    assert verdict["verdict"] == "unknown"
    assert {f["why"] for f in verdict["fields"]} == {"unsupported"}


def test_texts_too_short_to_tell_are_unknown(texts):
    row = {"task_type": "long_short", "language": "German", "query": texts["German"][0], "positive": "Sport",
           "hard_negative": "Politik"}
    verdict = check_row(row)
    assert verdict.verdict == "unknown"
    assert [f.why for f in verdict.fields] == ["matched", "too_short", "too_short"]
    # ...but a label in the wrong language next to a long text in the wrong language still rejects the row
    assert check_row({**row, "query": ENGLISH[0]}).verdict == "mismatched"


def test_flag_mode_keeps_the_row_and_records_the_verdict(texts):
    kind, rec = _validate(_sts(texts["English"], "German"), mode="flag")
    assert kind == "example"
    assert json.loads(rec["language_verdict"])["verdict"] == "mismatched"
    kind, rec = _validate(_sts(texts["English"], "German"), mode="off")
    assert kind == "example" and rec["language_verdict"] is None


def test_close_languages_are_not_rejected(texts):
    # Detectors cannot tell Bosnian from Croatian on a sentence: a Croatian-looking text asked as Bosnian passes.
    hr = ["Danas je lijep dan i idemo u šetnju po gradu.", "Moja sestra radi u bolnici kao medicinska sestra.",
          "Sutra ćemo kupiti novi stol za kuhinju."]
    assert check_row({"task_type": "sts", "language": "Bosnian", "query": hr[0], "positive": hr[1],
                      "hard_negative": hr[2]}).verdict != "mismatched"
