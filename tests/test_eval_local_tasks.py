"""Local task folders: every layout loads into mteb's task class; malformed folders name file and line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from synthembed.evaluate import LocalTaskError, EvalTask, build_task, load_folder, parse_reference_scores
from synthembed.evaluate.local_tasks import detect_layout


@pytest.mark.parametrize(
    "folder, layout, task_name, subsets",
    [
        ("stsbenchmark", "stsbenchmark", "STSBenchmark", ["default"]),
        ("stsb_multi_mt", "stsb_multi_mt", "STSBenchmarkMultilingualSTS", ["de", "en"]),
        ("scifact", "beir", "SciFact", ["default"]),
        ("tatoeba", "tatoeba", "Tatoeba", ["deu-eng", "fra-eng"]),
        ("banking77", "banking77", "Banking77Classification", ["default"]),
    ],
)
def test_each_layout_loads_into_mteb_task(shared_data, folder, layout, task_name, subsets):
    path = shared_data / folder
    assert detect_layout(path) == layout
    keep = None if subsets == ["default"] else subsets
    data = load_folder(path, limit=20, subsets=keep, corpus_limit=50)
    assert sorted(data.subsets) == sorted(subsets)
    task = build_task(data)
    assert task.metadata.name == task_name
    assert task.data_loaded
    assert sorted(task.hf_subsets) == sorted(subsets)
    split = task.dataset[subsets[0]]["test"]
    if layout == "beir":
        assert len(split["queries"]) == 20
        assert len(split["corpus"]) == 50
        # every judged document of the kept queries survives the corpus limit
        ids = set(split["corpus"]["id"])
        assert all(d in ids for rel in split["relevant_docs"].values() for d in rel)
        assert data.notes == {"default": "corpus 50 of 5183 docs"}
    else:
        assert len(split) == 20
    assert data.rows[subsets[0]] == 20 and data.full_rows[subsets[0]] > 20


def test_full_counts_match_the_data_readme(shared_data):
    assert load_folder(shared_data / "stsbenchmark").full_rows == {"default": 1379}
    beir = load_folder(shared_data / "scifact")
    test = beir.subsets["default"]["test"]
    assert (len(test["queries"]["id"]), len(test["corpus"]["id"])) == (300, 5183)
    assert sum(len(v) for v in test["relevant_docs"].values()) == 339
    bank = load_folder(shared_data / "banking77").subsets["default"]
    assert (len(bank["train"]["text"]), len(bank["test"]["text"])) == (10003, 3080)
    assert len(set(bank["train"]["label"])) == 77


def test_ja_is_skipped_for_mteb_multilingual_sts_but_kept_under_a_custom_name(shared_data):
    data = load_folder(shared_data / "stsb_multi_mt", subsets=["ja", "de"], limit=5)
    task = build_task(data)
    assert task.hf_subsets == ["de"]
    data = load_folder(shared_data / "stsb_multi_mt", subsets=["ja"], limit=5)
    custom = build_task(data, name="MyJapaneseSTS")
    assert custom.metadata.name == "MyJapaneseSTS" and custom.hf_subsets == ["ja"]
    assert custom.metadata.prompt == "Retrieve semantically similar text."


def test_a_folder_anywhere_works(shared_data, tmp_path):
    copy = tmp_path / "somewhere" / "my_tatoeba"
    copy.mkdir(parents=True)
    for name in ("tatoeba.deu-eng.deu.gz", "tatoeba.deu-eng.eng.gz"):
        shutil.copy(shared_data / "tatoeba" / name, copy / name)
    data = load_folder(copy, limit=3)
    assert list(data.subsets) == ["deu-eng"]
    assert data.subsets["deu-eng"]["test"]["sentence1"][0].startswith("Maria")


# ------------------------------------------------------------------------------------ malformed input
def _write_gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    dst.chmod(0o755)
    return dst


def test_missing_qrels_names_the_file(shared_data, tmp_path):
    folder = _copy(shared_data / "scifact", tmp_path / "scifact")
    shutil.rmtree(folder / "qrels")
    with pytest.raises(LocalTaskError, match=r"qrels/test\.tsv.*not found"):
        load_folder(folder, layout="beir")


def test_qrels_with_unknown_document_names_file_and_line(shared_data, tmp_path):
    folder = _copy(shared_data / "scifact", tmp_path / "scifact")
    qrels = folder / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    lines[3] = lines[3].split("\t")[0] + "\tNO_SUCH_DOC\t1"
    qrels.write_text("\n".join(lines) + "\n")
    with pytest.raises(LocalTaskError, match=r"test\.tsv:4: corpus-id 'NO_SUCH_DOC'"):
        load_folder(folder)


def test_bitext_line_count_mismatch_names_file_and_line(shared_data, tmp_path):
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    _write_gz(folder / "tatoeba.deu-eng.deu.gz", "eins\nzwei\ndrei\n")
    _write_gz(folder / "tatoeba.deu-eng.eng.gz", "one\ntwo\n")
    with pytest.raises(LocalTaskError, match=r"tatoeba\.deu-eng\.deu\.gz:3: line has no partner.*3 lines.*2"):
        load_folder(folder)


def test_bitext_empty_line_names_file_and_line(tmp_path):
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    _write_gz(folder / "tatoeba.fra-eng.fra.gz", "un\n\ntrois\n")
    _write_gz(folder / "tatoeba.fra-eng.eng.gz", "one\ntwo\nthree\n")
    with pytest.raises(LocalTaskError, match=r"tatoeba\.fra-eng\.fra\.gz:2: empty line"):
        load_folder(folder)


def test_sts_score_out_of_range_names_file_and_line(tmp_path):
    folder = tmp_path / "sts"
    folder.mkdir()
    (folder / "sts-test.csv").write_text(
        "g\tf\t2012\t0001\t2.5\tA cat.\tA dog.\n"
        "g\tf\t2012\t0002\t7.0\tA man.\tA woman.\n"
    )
    with pytest.raises(LocalTaskError, match=r"sts-test\.csv:2: score 7\.0 is outside \[0\.0, 5\.0\]"):
        load_folder(folder)
    multi = tmp_path / "multi"
    multi.mkdir()
    (multi / "stsb-de-test.csv").write_text('"Ein Hund.","Eine Katze.",1.0\n"Ja","Nein",-1\n')
    with pytest.raises(LocalTaskError, match=r"stsb-de-test\.csv:2: score -1\.0 is outside"):
        load_folder(multi)


def test_classification_label_not_in_categories_names_file_and_line(shared_data, tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "categories.json").write_text(json.dumps(["a", "b"]))
    (folder / "train.csv").write_text("text,category\nx,a\ny,b\n")
    (folder / "test.csv").write_text("text,category\nz,a\nw,c\n")
    with pytest.raises(LocalTaskError, match=r"test\.csv:3: category 'c' is not listed"):
        load_folder(folder)


def test_unknown_folder_and_wrong_task_type_are_clear(shared_data, tmp_path):
    with pytest.raises(LocalTaskError, match="no known layout"):
        load_folder(tmp_path)
    data = load_folder(shared_data / "stsbenchmark", limit=3)
    with pytest.raises(LocalTaskError, match="SciFact.*Retrieval task.*stsbenchmark layout"):
        build_task(data, "SciFact")
    with pytest.raises(ValueError, match="needs `name`.*or `path`"):
        EvalTask()


def test_reference_scores_parse(shared_data):
    refs = parse_reference_scores(shared_data / "REFERENCE_SCORES.md")
    minilm = refs["all-MiniLM-L6-v2"]
    assert minilm[("STSBenchmark", "default")] == 82.03
    assert minilm[("SciFact", "default")] == 64.51
    assert minilm[("Banking77Classification", "default")] == 80.04
    assert minilm[("Tatoeba", "deu-eng")] == 7.89
    assert minilm[("STSBenchmarkMultilingualSTS", "de")] == 62.40
    assert ("STSBenchmarkMultilingualSTS", "ja") not in minilm


def test_classification_limits_keep_every_label(shared_data):
    data = load_folder(shared_data / "banking77", limit=154, train_limit=231)
    split = data.subsets["default"]
    assert len(split["test"]["label"]) == 154 and len(set(split["test"]["label"])) == 77
    assert len(split["train"]["label"]) == 231 and len(set(split["train"]["label"])) == 77


def test_hub_task_offline_fails_with_a_clear_message(monkeypatch):
    """The hub path is real (mteb's own load_data); offline it names the task and the local alternative."""
    from synthembed.evaluate import HubTaskError, load_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubTaskError, match=r"SciFact.*could not load its data from the Hugging Face hub.*path: <folder>"):
        load_task(EvalTask(name="SciFact"))
    with pytest.raises(HubTaskError, match="not an mteb task"):
        load_task(EvalTask(name="NoSuchTask"))
