"""Which language-ID library for the generation's language check (synth/language.py)?

Candidates are the PyPI packages that ship their model inside the package (no download at run time):
py3langid, langid, langdetect, pycld2, lingua-language-detector. Each is scored on the same sample of
short texts (5-30 words; 8-60 characters for Chinese and Japanese) with known languages, drawn from the
benchmark copies in ../shared/data: both sides of the Tatoeba pairs and the sentences of STSb-multi-mt,
11 languages (en, de, fr, it, nl, pl, pt, ru, es, zh, ja), `--per-language` texts each.

Reported per library: accuracy (the top label equals the language; zh-cn/zh-tw count as zh), accuracy
when restricted to the XLM-R languages where the library allows it, how many of the XLM-R languages of
synth/languages.py it can output, and the mean time per text relative to the fastest library. For
py3langid it also reports accuracy and coverage above the confidence threshold used by synth/language.py.

The candidates need not be installed in the project's venv: run with them on PYTHONPATH, e.g.
    pip install --target /tmp/lid py3langid langid langdetect pycld2 lingua-language-detector
    PYTHONPATH=/tmp/lid .venv/bin/python bench/langid_compare.py
A missing library is reported as skipped. Writes bench/results/langid_compare.json.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from synthembed.synth.language import ISO_CODES, MIN_CONFIDENCE  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TATOEBA = {"deu": "de", "fra": "fr", "ita": "it", "nld": "nl", "pol": "pl", "por": "pt", "rus": "ru",
           "spa": "es", "cmn": "zh", "jpn": "ja"}
STSB = ("de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
NO_SPACES = {"zh", "ja"}
XLMR_CODES = sorted({c for c in ISO_CODES.values() if c})


def _short(text: str, lang: str) -> bool:
    if lang in NO_SPACES:
        return 8 <= len(text) <= 60
    return 5 <= len(text.split()) <= 30


def sample(per_language: int, seed: int) -> list[tuple[str, str]]:
    """(language code, text) pairs, `per_language` of each language, deduplicated."""
    pool: dict[str, set[str]] = {}
    for code3, code in TATOEBA.items():
        for side, lang in ((code3, code), ("eng", "en")):
            with gzip.open(DATA / "tatoeba" / f"tatoeba.{code3}-eng.{side}.gz", "rt", encoding="utf-8") as fh:
                pool.setdefault(lang, set()).update(line.strip() for line in fh if line.strip())
    for lang in STSB:
        with gzip.open(DATA / "stsb_multi_mt" / f"stsb-{lang}-test.csv.gz", "rt", encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                pool.setdefault(lang, set()).update(t.strip() for t in row[:2])
    rng = random.Random(seed)
    out = []
    for lang in sorted(pool):
        texts = sorted(t for t in pool[lang] if _short(t, lang))
        out += [(lang, t) for t in rng.sample(texts, min(per_language, len(texts)))]
    return out


def _norm(code: str | None) -> str | None:
    if not code:
        return None
    code = code.lower().replace("_", "-")
    return {"iw": "he", "jw": "jv", "in": "id", "zh-cn": "zh", "zh-tw": "zh", "zh-hant": "zh", "nb": "no"}.get(
        code, code.split("-")[0])


# ------------------------------------------------------------------------------------------ candidates
def _py3langid(restrict: bool):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    labels = set(ident.labels)
    if restrict:
        ident.set_languages([c for c in XLMR_CODES if c in labels])
    return (lambda t: ident.classify(t)), labels


def _langid(restrict: bool):
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    labels = set(ident.nb_classes)
    if restrict:
        ident.set_languages([c for c in XLMR_CODES if c in labels])
    return (lambda t: ident.classify(t)), labels


def _langdetect(restrict: bool):
    import os

    import langdetect
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # langdetect samples features at random; fixed for a fair, repeatable score
    profiles = Path(os.path.dirname(langdetect.__file__)) / "profiles"
    labels = {_norm(p.name) for p in profiles.iterdir()}

    def classify(text):
        try:
            best = langdetect.detect_langs(text)[0]
            return best.lang, best.prob
        except Exception:  # "No features in text"
            return None, 0.0
    return classify, labels


def _pycld2(restrict: bool):
    import pycld2

    labels = {_norm(code) for name, code in pycld2.LANGUAGES if name in set(pycld2.DETECTED_LANGUAGES)}

    def classify(text):
        reliable, _, details = pycld2.detect(text)
        code = details[0][1]
        return (None if code == "un" else code), details[0][2] / 100
    return classify, labels


def _lingua(restrict: bool):
    from lingua import Language, LanguageDetectorBuilder

    langs = list(Language.all())
    labels = {lang.iso_code_639_1.name.lower() for lang in langs}
    if restrict:
        langs = [lang for lang in langs if lang.iso_code_639_1.name.lower() in set(XLMR_CODES)]
    det = LanguageDetectorBuilder.from_languages(*langs).build()

    def classify(text):
        values = det.compute_language_confidence_values(text)
        if not values:
            return None, 0.0
        return values[0].language.iso_code_639_1.name.lower(), values[0].value
    return classify, labels


CANDIDATES = {"py3langid": _py3langid, "langid": _langid, "langdetect": _langdetect, "pycld2": _pycld2,
              "lingua": _lingua}
RESTRICTABLE = {"py3langid", "langid", "lingua"}


def score(classify, texts: list[tuple[str, str]]) -> dict:
    right, times, confident, confident_right = 0, [], 0, 0
    per_lang: dict[str, list[int]] = {}
    for lang, text in texts:
        t0 = time.perf_counter()
        code, prob = classify(text)
        times.append(time.perf_counter() - t0)
        ok = _norm(code) == lang
        right += ok
        per_lang.setdefault(lang, [0, 0])[0] += ok
        per_lang[lang][1] += 1
        if prob >= MIN_CONFIDENCE:
            confident += 1
            confident_right += ok
    return {
        "accuracy": round(right / len(texts), 4),
        "per_language": {k: round(a / n, 3) for k, (a, n) in sorted(per_lang.items())},
        "mean_ms_per_text": round(1000 * sum(times) / len(times), 4),
        "confident_share": round(confident / len(texts), 4),
        "accuracy_when_confident": round(confident_right / max(1, confident), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-language", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "langid_compare.json"))
    args = ap.parse_args()
    texts = sample(args.per_language, args.seed)
    results, skipped = {}, {}
    for name, make in CANDIDATES.items():
        try:
            classify, labels = make(False)
        except ImportError as err:
            skipped[name] = f"not installed ({err})"
            continue
        covered = sorted({_norm(c) for c in labels} & set(XLMR_CODES))
        res = {"xlmr_codes_covered": len(covered), "xlmr_codes_missing": sorted(set(XLMR_CODES) - set(covered)),
               "all": score(classify, texts)}
        if name in RESTRICTABLE:
            res["restricted_to_xlmr"] = score(make(True)[0], texts)
        results[name] = res
        print(f"{name}: accuracy {res['all']['accuracy']:.3f}"
              + (f" (restricted {res['restricted_to_xlmr']['accuracy']:.3f})" if "restricted_to_xlmr" in res else "")
              + f", {len(covered)}/{len(XLMR_CODES)} XLM-R codes, {res['all']['mean_ms_per_text']:.3f} ms/text",
              flush=True)
    fastest = min(r["all"]["mean_ms_per_text"] for r in results.values())
    for r in results.values():
        r["time_ratio_to_fastest"] = round(r["all"]["mean_ms_per_text"] / fastest, 2)
    out = {
        "sample": {"texts": len(texts), "per_language": args.per_language, "languages": sorted({l for l, _ in texts}),
                   "sources": ["shared/data/tatoeba (both sides)", "shared/data/stsb_multi_mt (sentence1, sentence2)"],
                   "length": "5-30 words (zh, ja: 8-60 characters)", "seed": args.seed},
        "xlmr_codes": len(XLMR_CODES),
        "confidence_threshold": MIN_CONFIDENCE,
        "results": results,
        "skipped": skipped,
        "chosen": "py3langid (restricted to the XLM-R codes); see synth/language.py for why",
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
