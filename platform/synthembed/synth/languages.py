"""Languages: the XLM-R list, the paper's observed weights, and the bitext pair policy.

The paper samples `{language}` from the 100 languages of XLM-R "giving more weight to high-resource
languages" without publishing the weights. Its Figure 2 shows the outcome, which we use as the default:
English 43.1%; Polish 3.0%; Japanese, Italian, Russian, Indonesian, German, Persian 2.9%; Spanish,
Chinese, French, Portuguese, Dutch 2.8%; Arabic 2.7%; the remaining ~20% spread evenly over the rest.

Bitext pairs (the paper does not say how it picks them): the source language is drawn from the same
weights, the target from the same weights with the source removed. With English at 43%, about three in
four pairs involve English, and every language can appear on either side.
"""

from __future__ import annotations

import random
from typing import Mapping

# XLM-R's 100 languages (Conneau et al. 2020, Appendix A), by English name as used in the prompts.
# Romanized and script variants are separate entries there, and here.
XLMR_LANGUAGES: tuple[str, ...] = (
    "Afrikaans", "Albanian", "Amharic", "Arabic", "Armenian", "Assamese", "Azerbaijani", "Basque",
    "Belarusian", "Bengali", "Bengali (Romanized)", "Bosnian", "Breton", "Bulgarian", "Burmese",
    "Burmese (Zawgyi)", "Catalan", "Chinese (Simplified)", "Chinese (Traditional)", "Croatian", "Czech",
    "Danish", "Dutch", "English", "Esperanto", "Estonian", "Filipino", "Finnish", "French", "Galician",
    "Georgian", "German", "Greek", "Gujarati", "Hausa", "Hebrew", "Hindi", "Hindi (Romanized)", "Hungarian",
    "Icelandic", "Indonesian", "Irish", "Italian", "Japanese", "Javanese", "Kannada", "Kazakh", "Khmer",
    "Korean", "Kurdish (Kurmanji)", "Kyrgyz", "Lao", "Latin", "Latvian", "Lithuanian", "Macedonian",
    "Malagasy", "Malay", "Malayalam", "Marathi", "Mongolian", "Nepali", "Norwegian", "Oriya", "Oromo",
    "Pashto", "Persian", "Polish", "Portuguese", "Punjabi", "Romanian", "Russian", "Sanskrit",
    "Scottish Gaelic", "Serbian", "Sindhi", "Sinhala", "Slovak", "Slovenian", "Somali", "Spanish",
    "Sundanese", "Swahili", "Swedish", "Tamil", "Tamil (Romanized)", "Telugu", "Telugu (Romanized)", "Thai",
    "Turkish", "Ukrainian", "Urdu", "Urdu (Romanized)", "Uyghur", "Uzbek", "Vietnamese", "Welsh",
    "Western Frisian", "Xhosa", "Yiddish",
)

# Figure 2 of the paper (share of all generated examples).
PAPER_HIGH_RESOURCE: dict[str, float] = {
    "English": 0.431,
    "Polish": 0.030,
    "Japanese": 0.029, "Italian": 0.029, "Russian": 0.029, "Indonesian": 0.029, "German": 0.029, "Persian": 0.029,
    "Spanish": 0.028, "Chinese (Simplified)": 0.028, "French": 0.028, "Portuguese": 0.028, "Dutch": 0.028,
    "Arabic": 0.027,
}


def default_weights() -> dict[str, float]:
    """The paper's observed distribution: listed high-resource shares, the rest spread evenly."""
    rest = [lang for lang in XLMR_LANGUAGES if lang not in PAPER_HIGH_RESOURCE]
    left = 1.0 - sum(PAPER_HIGH_RESOURCE.values())
    weights = dict(PAPER_HIGH_RESOURCE)
    weights.update({lang: left / len(rest) for lang in rest})
    return weights


def resolve_weights(weights: Mapping[str, float] | None = None, only: list[str] | None = None) -> dict[str, float]:
    """Normalised language weights.

    `weights` replaces the default table (languages not listed get weight 0); `only` keeps a subset of
    whatever table is in force. Unknown names and non-positive totals are errors naming the field.
    """
    table = dict(weights) if weights else default_weights()
    known = set(XLMR_LANGUAGES)
    unknown = sorted(set(table) - known) + sorted(set(only or []) - known)
    if unknown:
        raise ValueError(
            f"generate.languages / generate.language_weights: unknown language(s) {unknown}; use XLM-R names such as "
            f"'English', 'German', 'Chinese (Simplified)' (see synthembed.synth.languages.XLMR_LANGUAGES)"
        )
    if any(w < 0 for w in table.values()):
        raise ValueError("generate.language_weights: weights must be >= 0")
    if only:
        table = {lang: (table.get(lang, 0.0) or 0.0) for lang in only}
        if sum(table.values()) <= 0:  # a subset of zero-weight languages: sample it uniformly
            table = {lang: 1.0 for lang in only}
    total = sum(table.values())
    if total <= 0:
        raise ValueError("generate.language_weights: all weights are zero")
    return {lang: w / total for lang, w in table.items() if w > 0}


def sample_language(rng: random.Random, weights: Mapping[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names], k=1)[0]


def sample_bitext_pair(rng: random.Random, weights: Mapping[str, float]) -> tuple[str, str]:
    """(source, target): source from `weights`, target from `weights` without the source."""
    src = sample_language(rng, weights)
    rest = {k: v for k, v in weights.items() if k != src}
    if not rest:
        raise ValueError("generate.languages: bitext needs at least two languages with non-zero weight")
    return src, sample_language(rng, rest)
