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


# -------------------------------------------------------------------------------------- decontamination
from synthembed.evaluate.config import EvalTask  # noqa: E402
from synthembed.evaluate.texts import task_texts  # noqa: E402
from synthembed.synth.decontaminate import DecontaminateConfig, EvalIndex, filter_rows, tokens  # noqa: E402


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def _sts_sentences(shared: Path) -> list[str]:
    return [line.split("\t")[5].strip() for line in _lines(shared / "stsbenchmark" / "sts-test.csv.gz") if line.strip()]


@pytest.fixture(scope="module")
def eval_index(shared_data) -> EvalIndex:
    tasks = [EvalTask(path=str(shared_data / "stsbenchmark"), limit=5),  # limits do not shrink what is checked
             EvalTask(path=str(shared_data / "tatoeba"), subsets=["deu-eng", "cmn-eng"])]
    texts, notes = task_texts(tasks)
    assert not notes
    assert len(texts) == 2 * 1379 + 4 * 1000
    return EvalIndex(texts)


def _row(**fields) -> dict:
    base = {"id": "x", "task_type": "short_long", "instruction": "Given a query, find passages",
            "query": "some query about things", "positive": "A passage about something else entirely.",
            "hard_negative": None, "language": "English"}
    return {**base, **fields}


def test_a_planted_evaluation_sentence_is_removed(shared_data, eval_index):
    long = next(s for s in _sts_sentences(shared_data) if len(tokens(s)) >= 16)
    short = next(s for s in _sts_sentences(shared_data) if 8 <= len(tokens(s)) < 13)
    planted_long = _row(positive=f"As reported yesterday, {long.upper()} Nobody expected that outcome.")
    planted_short = _row(hard_negative=f"Interesting fact: {short} And that is all there is to say.")
    clean = _row()
    kept, removed = filter_rows([planted_long, planted_short, clean], eval_index)
    assert kept == [clean]
    assert [r["rule"] for r in removed] == ["long_ngram", "contains_eval_text"]
    assert [r["field"] for r in removed] == ["positive", "hard_negative"]
    assert removed[0]["eval_text"] == long and removed[0]["eval_task"] == "stsbenchmark"
    assert removed[0]["reason"].startswith("contaminated: positive matches stsbenchmark")


def test_a_paraphrase_below_the_threshold_is_kept(shared_data, eval_index):
    long = next(s for s in _sts_sentences(shared_data) if len(tokens(s)) >= 20)
    words = long.split()
    # every 6th word replaced: at most 5 original words in a row, below both 8 and 13
    paraphrase = " ".join("indeed" if i % 6 == 5 else w for i, w in enumerate(words))
    assert eval_index.match(paraphrase) is None
    assert eval_index.match(long) is not None  # the original is caught, so the check itself works
    # 12 words copied in a row (under 13) from the middle of a long test sentence, inside a text of our own: kept
    toks = tokens(long)
    assert eval_index.match(f"We wrote this ourselves and {' '.join(toks[3:15])} then went on with our story") is None
    assert eval_index.match(f"We wrote this ourselves and {' '.join(toks[2:15])} then went on") is not None


def test_a_short_text_exact_match_is_caught(shared_data, eval_index):
    german = _lines(shared_data / "tatoeba" / "tatoeba.deu-eng.deu.gz")
    short = next(s for s in german if 4 <= len(tokens(s)) <= 6)
    # case, punctuation and Unicode width differ; the normalised text is the same
    variant = "  " + short.upper().rstrip(".!?") + " !"
    hit = eval_index.match(variant)
    assert hit is not None and hit.rule == "exact" and hit.task == "tatoeba/deu-eng"
    # a short text that is merely similar is not a match
    assert eval_index.match(short.rstrip(".!?") + " heute nicht") is None
    # under min_exact_tokens an exact match is too common to mean contamination ("thank you")
    tiny = next(s for s in german if len(tokens(s)) == 2)
    assert eval_index.match(tiny) is None


def test_chinese_is_compared_by_characters(shared_data, eval_index):
    chinese = _lines(shared_data / "tatoeba" / "tatoeba.cmn-eng.cmn.gz")
    sentence = next(s for s in chinese if 9 <= len(tokens(s)) < 13)
    hit = eval_index.match(f"我们今天听说{sentence}然后大家都回家了")
    assert hit is not None and hit.task == "tatoeba/cmn-eng", sentence


def test_decontamination_pass_writes_a_clean_folder_training_reads(tmp_path, shared_data):
    from synthembed.synth.decontaminate_stage import read_report, run as decontaminate
    from synthembed.synth.ledger import write_atomic
    from synthembed.synth.schema import EXAMPLE_SCHEMA
    from synthembed.train.config import DataSource
    from synthembed.train.data import read_source
    import pyarrow as pa

    # a local task folder in the stsbenchmark layout, made here
    task = tmp_path / "mytask"
    task.mkdir()
    sentences = ["The quick brown fox jumps over the lazy dog near the old river bank today.",
                 "A woman is slicing a large red onion on a wooden board in her kitchen."]
    (task / "sts-test.csv").write_text(
        "\n".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{4.0}\t{s}\tSomething else entirely here." for i, s in
                  enumerate(sentences)) + "\n")
    gen = tmp_path / "generate"
    rows = [{**_row(id=f"id{i}", positive=p), "placeholders": "{}", "generator": "t:m", "prompt_version": "v",
             "request_id": f"r{i}", "tokens_in": 1, "tokens_out": 1, "language_verdict": None}
            for i, p in enumerate([f"Yesterday {sentences[1].lower()} And then dinner.", "An unrelated passage here.",
                                   "Another passage of our own making."])]
    write_atomic(pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA), gen / "examples" / "p.parquet")
    (gen / "manifest.json").write_text('{"fingerprint": "abc"}')
    out = decontaminate(gen, tmp_path / "decontaminate", [EvalTask(path=str(task))], DecontaminateConfig())
    report = read_report(out)
    assert report["examples_in"] == 3 and report["removed"] == 1 and report["examples_kept"] == 2
    assert report["by_task"] == {"mytask": 1} and report["examples"][0]["id"] == "id0"
    assert report["eval_texts"] == 4  # both sentences of both rows
    table = read_source(DataSource(path=str(out)))
    assert sorted(table.column("id").to_pylist()) == ["id1", "id2"]
    removed = pa.parquet.read_table(out / "removed.parquet").to_pylist()
    assert [r["id"] for r in removed] == ["id0"] and removed[0]["reason"].startswith("contaminated")
    # summaries: pipeline and evaluation report
    from synthembed.evaluate.report import markdown_report
    from synthembed.workflow import decontamination_lines

    text = "\n".join(decontamination_lines(report))
    assert "removed 1 of 3" in text and "mytask" in text
    run = {"label": "fine-tuned", "scores": [], "training_data_decontamination": report}
    md = markdown_report([run])
    assert "decontamination" in md and "Removed **1** of 3" in md


def test_decontaminate_config_accepts_a_bool_and_the_pipeline_trains_on_the_clean_copy(tmp_path):
    from synthembed.workflow import PipelineConfig, wire

    assert DecontaminateConfig.model_validate(False).enabled is False
    base = {"output_root": str(tmp_path), "evaluate": {"tasks": [{"name": "STSBenchmark"}]}}
    on = wire(PipelineConfig.model_validate(base))
    assert Path(on.train.data[0].path) == tmp_path.resolve() / "decontaminate"
    off = wire(PipelineConfig.model_validate({**base, "decontaminate": False}))
    assert Path(off.train.data[0].path) == tmp_path.resolve() / "generate"
    with pytest.raises(Exception, match="short_ngram"):
        DecontaminateConfig(short_ngram=13, long_ngram=13)


def test_hub_tasks_are_skipped_offline_with_a_note(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts, notes = task_texts([EvalTask(name="SciFact")])
    assert texts == [] and "SciFact" in notes[0] and "HF_HUB_OFFLINE" in notes[0]


# ---------------------------------------------------------------------------------------------- stats
def test_stats_count_unique_instructions_and_language_verdicts(tmp_path, texts):
    import pyarrow as pa

    from synthembed.synth.ledger import Ledger, write_atomic
    from synthembed.synth.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA
    from synthembed.synth.schema import normalize_text
    from synthembed.synth.stats import opening, stats, summary_md

    de, en = texts["German"], texts["English"]
    outs = [
        _validate(_sts(de, "German")),                                                           # matched
        _validate(_sts(en, "German")),                                                           # rejected
        _validate(_sts(en, "Sindhi")),                                                           # unknown
        _validate(_engine_row("bitext", {"S1": de[0], "S2": de[1], "S3": en[1]}, "German", "German", "English")),
        _validate(_sts(en, "English"), mode="flag"),
    ]
    examples = [rec for kind, rec in outs if kind == "example"]
    rejects = [rec for kind, rec in outs if kind == "reject"]
    assert len(examples) == 3 and len(rejects) == 2
    instructions = ["Find recipes for a dish", "find recipes  for a dish", "Classify reviews by sentiment"]
    for i, rec in enumerate(examples):
        rec.pop("_raw")
        rec.update(id=f"e{i}", request_id=f"q{i}")
    short_long = [{**examples[0], "id": f"s{i}", "request_id": f"s{i}", "task_type": "short_long", "instruction": inst}
                  for i, inst in enumerate(instructions)]
    write_atomic(pa.Table.from_pylist(examples + short_long, schema=EXAMPLE_SCHEMA), tmp_path / "examples" / "a.parquet")
    write_atomic(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), tmp_path / "rejects" / "a.parquet")
    plan = [{"request_id": r["request_id"]} for r in examples + short_long + rejects]
    st = stats(Ledger(tmp_path), plan, [{"wall_time_s": 1.0}])
    # case and spacing variants are one instruction; sts has its one fixed instruction
    assert st.unique_instructions == {"sts": 1, "short_long": 2}
    assert st.unique_instructions_total == 3
    lc = {k: v.model_dump() for k, v in st.language_check.items()}
    # German: 1 sts matched + 3 short_long copies of it matched, 1 sts rejected, 1 bitext source side matched
    assert lc["German"] == {"matched": 5, "mismatched": 1, "unknown": 0}
    assert lc["English"] == {"matched": 1, "mismatched": 1, "unknown": 0}   # flagged sts / bitext target side
    assert lc["Sindhi"] == {"matched": 0, "mismatched": 0, "unknown": 1}
    assert st.reject_reasons == {"wrong_language": 2}
    md = summary_md(st)
    assert "Unique task instructions: **3**" in md and "| German | 5 | 1 | 0 |" in md
    # the three short_long rows share one query: one unique query, its opening counted three times
    first = opening(examples[0]["query"])
    assert first and st.query_diversity["short_long"].model_dump() == {
        "unique_queries": 1, "top_opening": first, "top_opening_count": 3}
    assert st.query_diversity["sts"].unique_queries == len({normalize_text(r["query"]) for r in examples
                                                            if r["task_type"] == "sts"})
    assert f"| short_long | 3 | 1 | {first} | 3 |" in md


def test_query_diversity_counts_a_stock_opening_under_rewording():
    from synthembed.synth.stats import query_diversity

    queries = ["The quick brown fox jumps over the lazy dog.", "the quick  brown fox ran over a sleepy cat",
               "The QUICK brown fox, again", "The quick brown fox jumps over the lazy dog",
               "A cat sleeps on the warm rug."]
    got = query_diversity(["sts"] * 5 + ["bitext"], queries + ["Hola"])
    # the first and fourth differ only in the final stop: one query; case, spacing and commas do not split an opening
    assert got["sts"] == {"unique_queries": 4, "top_opening": "the quick brown fox", "top_opening_count": 4}
    assert got["bitext"] == {"unique_queries": 1, "top_opening": "hola", "top_opening_count": 1}


def test_language_pass_drops_flagged_mismatches_and_keeps_unknown_rows(tmp_path, texts):
    """generate.language_check: flag keeps every row; the pipeline's language pass drops the mismatched ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthembed.synth import language_filter
    from synthembed.synth.ledger import write_atomic
    from synthembed.synth.schema import EXAMPLE_COLUMNS, EXAMPLE_SCHEMA
    from synthembed.train.config import DataSource
    from synthembed.train.data import read_source
    from synthembed.workflow import PipelineConfig, wire

    cases = {"de-ok": _sts(texts["German"], "German"), "de-en": _sts(texts["English"], "German"),
             "ru-ok": _sts(texts["Russian"], "Russian"), "zh-ru": _sts(texts["Russian"], "Chinese (Simplified)"),
             "short": _sts(["Ja.", "Nein.", "Gut."], "German")}
    rows = []
    for i, (name, engine_row) in enumerate(cases.items()):
        kind, rec = _validate(engine_row, mode="flag")
        assert kind == "example", name
        rows.append({**{k: rec.get(k) for k in EXAMPLE_COLUMNS}, "id": name, "request_id": f"r{i}"})
    source = tmp_path / "generate"
    write_atomic(pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA), source / "examples" / "p.parquet")
    (source / "manifest.json").write_text('{"fingerprint": "abc"}')

    out = language_filter.run(source, tmp_path / "language", language_filter.LanguageFilterConfig(enabled=True))
    assert sorted(read_source(DataSource(path=str(out))).column("id").to_pylist()) == ["de-ok", "ru-ok", "short"]
    removed = pq.read_table(out / "removed.parquet").to_pylist()
    assert sorted(r["id"] for r in removed) == ["de-en", "zh-ru"]
    assert all(r["reason"].startswith("wrong_language: ") and "asked" in r["reason"] for r in removed)
    report = json.loads((out / "report.json").read_text())
    assert report["removed_by_language"] == {"German": 1, "Chinese (Simplified)": 1}

    # the pipeline runs it first and trains on the last pass's folder; it needs the verdicts
    base = {"output_root": str(tmp_path), "evaluate": {"tasks": [{"name": "STSBenchmark"}]},
            "generate": {"language_check": "flag"}, "language_filter": True, "decontaminate": False}
    assert wire(PipelineConfig.model_validate(base)).train.data[0].path == str(tmp_path.resolve() / "language")
    with pytest.raises(ValueError, match="generate.language_check: flag"):
        PipelineConfig.model_validate({**base, "generate": {"language_check": "off"}})


def test_a_python_without_the_detector_is_told_the_fix(monkeypatch):
    import importlib.util

    from synthembed.synth import language

    language.require_detector()  # this environment has it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "py3langid" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"py3langid.*pip install.*language_check: off"):
        language.require_detector()
