"""Local task folders -> mteb task objects with their data injected (no hub needed).

Each layout is the on-disk format of one public benchmark copy (see shared/data/README.md); a folder in
that layout anywhere on disk works. The data is parsed and checked here, then handed to mteb's own task
class (`task.dataset = ...; task.data_loaded = True`) so the metrics are computed by mteb's evaluators,
exactly as for the hub version of the task. Malformed input raises `LocalTaskError` naming the file and
the line.

Layouts and the mteb task they default to:

| layout          | files                                                       | mteb task                    |
|-----------------|-------------------------------------------------------------|------------------------------|
| `stsbenchmark`  | `sts-test.csv[.gz]` (tab-separated, score in column 4)      | STSBenchmark                 |
| `stsb_multi_mt` | `stsb-<lang>-test.csv[.gz]` (CSV: s1, s2, score)            | STSBenchmarkMultilingualSTS  |
| `beir`          | `corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/test.tsv` | SciFact                      |
| `tatoeba`       | `tatoeba.<xxx>-eng.<xxx>[.gz]` + `tatoeba.<xxx>-eng.eng[.gz]` | Tatoeba                    |
| `banking77`     | `train.csv[.gz]`, `test.csv[.gz]` (text,category), `categories.json` | Banking77Classification |
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STS_RANGE = (0.0, 5.0)


class LocalTaskError(ValueError):
    """A local task folder is missing a file or has a malformed line; the message names both."""


# ------------------------------------------------------------------------------------------- reading

def _csv_rows(reader, path, fields: str):
    """(line number, row) of the non-empty CSV rows; a row with another field count names file and line."""
    expected = len(fields.split(", "))
    for row in reader:
        if not row:
            continue
        if len(row) != expected:
            raise LocalTaskError(f"{path}:{reader.line_num}: expected {expected} CSV fields ({fields}), got {len(row)}")
        yield reader.line_num, row

def find_file(folder: Path, name: str, required: bool = True) -> Path | None:
    """`name` or `name.gz` inside `folder`."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    if required:
        raise LocalTaskError(f"{folder / name}[.gz]: file not found (needed by this layout)")
    return None


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline)."""
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            yield number, line.rstrip("\r\n")


def _score(raw: str, path: Path, line: int, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise LocalTaskError(f"{path}:{line}: score {raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise LocalTaskError(f"{path}:{line}: score {value} is outside [{lo}, {hi}]")
    return value


# ------------------------------------------------------------------------------------- parsed forms
@dataclass
class LocalData:
    """Parsed rows of one local folder: subset -> split -> columns, plus where they came from."""

    layout: str
    path: Path
    subsets: dict[str, dict] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # subset -> evaluated rows (after limits)
    full_rows: dict[str, int] = field(default_factory=dict)  # subset -> rows in the files
    notes: dict[str, str] = field(default_factory=dict)  # subset -> other reductions (e.g. a smaller corpus)


def _sts_split(s1: list[str], s2: list[str], scores: list[float], limit: int | None) -> dict:
    n = len(scores) if limit is None else min(limit, len(scores))
    return {"sentence1": s1[:n], "sentence2": s2[:n], "score": scores[:n]}


def _load_stsbenchmark(data: LocalData, limit, **_) -> None:
    path = find_file(data.path, "sts-test.csv")
    s1, s2, scores = [], [], []
    for line_no, line in read_lines(path):
        if not line.strip():
            continue
        # Split on tabs only: the file has unbalanced quotes that a CSV parser would merge across lines.
        parts = line.split("\t")
        if len(parts) < 7:
            raise LocalTaskError(
                f"{path}:{line_no}: expected >= 7 tab-separated fields (genre, file, year, id, score, sentence1, "
                f"sentence2), got {len(parts)}"
            )
        scores.append(_score(parts[4], path, line_no, *STS_RANGE))
        s1.append(parts[5].strip())
        s2.append(parts[6].strip())
    data.subsets["default"] = {"test": _sts_split(s1, s2, scores, limit)}
    data.full_rows["default"] = len(scores)
    data.rows["default"] = len(data.subsets["default"]["test"]["score"])


def _load_stsb_multi(data: LocalData, limit, subsets, **_) -> None:
    files = sorted(p for p in data.path.iterdir() if re.fullmatch(r"stsb-[a-z]+-test\.csv(\.gz)?", p.name))
    for path in files:
        lang = path.name.split("-")[1]
        if subsets and lang not in subsets:
            continue
        s1, s2, scores = [], [], []
        with open_text(path) as fh:
            for line_no, row in _csv_rows(csv.reader(fh), path, "sentence1, sentence2, score"):
                scores.append(_score(row[2], path, line_no, *STS_RANGE))
                s1.append(row[0])
                s2.append(row[1])
        data.subsets[lang] = {"test": _sts_split(s1, s2, scores, limit)}
        data.full_rows[lang] = len(scores)
        data.rows[lang] = len(data.subsets[lang]["test"]["score"])


def _read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    for line_no, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise LocalTaskError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        missing = [k for k in keys if not isinstance(obj.get(k), str)]
        if missing:
            raise LocalTaskError(f"{path}:{line_no}: missing string field(s) {missing}")
        rows.append(obj)
    return rows


def _load_beir(data: LocalData, limit, corpus_limit, **_) -> None:
    corpus_path = find_file(data.path, "corpus.jsonl")
    queries_path = find_file(data.path, "queries.jsonl")
    qrels_path = find_file(data.path / "qrels", "test.tsv")
    corpus = _read_jsonl(corpus_path, ("_id", "text"))
    queries = _read_jsonl(queries_path, ("_id", "text"))
    doc_ids = {d["_id"] for d in corpus}
    query_ids = {q["_id"] for q in queries}
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in read_lines(qrels_path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if line_no == 1 and parts[0] == "query-id":
            continue  # BEIR header
        if len(parts) != 3:
            raise LocalTaskError(f"{qrels_path}:{line_no}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}")
        qid, did, raw = parts
        try:
            score = int(raw)
        except ValueError:
            raise LocalTaskError(f"{qrels_path}:{line_no}: relevance score {raw!r} is not an integer") from None
        if qid not in query_ids:
            raise LocalTaskError(f"{qrels_path}:{line_no}: query-id {qid!r} is not in {queries_path.name}")
        if did not in doc_ids:
            raise LocalTaskError(f"{qrels_path}:{line_no}: corpus-id {did!r} is not in {corpus_path.name}")
        qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise LocalTaskError(f"{qrels_path}: no relevance judgements")
    # BEIR evaluates only the queries that have judgements, in file order.
    kept_queries = [q for q in queries if q["_id"] in qrels]
    full_queries = len(kept_queries)
    if limit is not None:
        kept_queries = kept_queries[:limit]
    kept_qids = {q["_id"] for q in kept_queries}
    qrels = {q: qrels[q] for q in kept_qids}
    if corpus_limit is not None and corpus_limit < len(corpus):
        # Keep every judged document of the kept queries, then fill up with the others in file order.
        needed = {d for rel in qrels.values() for d in rel}
        others = corpus_limit - len(needed)
        kept = []
        for doc in corpus:
            if doc["_id"] in needed:
                kept.append(doc)
            elif others > 0:
                kept.append(doc)
                others -= 1
        corpus = kept
    data.subsets["default"] = {
        "test": {
            "corpus": {
                "id": [d["_id"] for d in corpus],
                "title": [d.get("title") or "" for d in corpus],
                "text": [d["text"] for d in corpus],
            },
            "queries": {"id": [q["_id"] for q in kept_queries], "text": [q["text"] for q in kept_queries]},
            "relevant_docs": qrels,
        }
    }
    data.full_rows["default"] = full_queries
    data.rows["default"] = len(kept_queries)
    if len(corpus) < len(doc_ids):
        data.notes["default"] = f"corpus {len(corpus)} of {len(doc_ids)} docs"
    log.info("%s: %d queries, %d documents", data.path, len(kept_queries), len(corpus))


def _load_tatoeba(data: LocalData, limit, subsets, **_) -> None:
    pattern = re.compile(r"tatoeba\.([a-z]+)-eng\.([a-z]+)(\.gz)?")
    langs = sorted({m.group(1) for p in data.path.iterdir() if (m := pattern.fullmatch(p.name))})
    for lang in langs:
        pair = f"{lang}-eng"
        if subsets and pair not in subsets and lang not in subsets:
            continue
        src_path = find_file(data.path, f"tatoeba.{pair}.{lang}")
        eng_path = find_file(data.path, f"tatoeba.{pair}.eng")
        src = [line for _, line in read_lines(src_path)]
        eng = [line for _, line in read_lines(eng_path)]
        if len(src) != len(eng):
            shorter, longer = (src_path, eng_path) if len(src) < len(eng) else (eng_path, src_path)
            first_unpaired = min(len(src), len(eng)) + 1
            raise LocalTaskError(
                f"{longer}:{first_unpaired}: line has no partner: {src_path.name} has {len(src)} lines but "
                f"{eng_path.name} has {len(eng)} (bitext files must be line-aligned; {shorter.name} is shorter)"
            )
        for path, lines in ((src_path, src), (eng_path, eng)):
            for i, text in enumerate(lines, start=1):
                if not text.strip():
                    raise LocalTaskError(f"{path}:{i}: empty line (every line must hold one sentence)")
        n = len(src) if limit is None else min(limit, len(src))
        # mteb's Tatoeba: sentence1 is the non-English side, mined against sentence2 (English).
        data.subsets[pair] = {"test": {"sentence1": src[:n], "sentence2": eng[:n]}}
        data.full_rows[pair] = len(src)
        data.rows[pair] = n


def _read_labeled_csv(path: Path, categories: list[str] | None, categories_path: Path | None) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["text", "category"]:
            raise LocalTaskError(f"{path}:1: expected the header 'text,category', got {header!r}")
        allowed = set(categories) if categories else None
        for line_no, row in _csv_rows(reader, path, "text, category"):
            if allowed is not None and row[1] not in allowed:
                raise LocalTaskError(f"{path}:{line_no}: category {row[1]!r} is not listed in {categories_path}")
            texts.append(row[0])
            labels.append(row[1])
    return texts, labels


def _load_banking77(data: LocalData, limit, train_limit, **_) -> None:
    categories_path = find_file(data.path, "categories.json", required=False)
    categories = None
    if categories_path is not None:
        with open_text(categories_path) as fh:
            try:
                categories = json.load(fh)
            except json.JSONDecodeError as err:
                raise LocalTaskError(f"{categories_path}:{err.lineno}: not valid JSON ({err.msg})") from None
        if not (isinstance(categories, list) and all(isinstance(c, str) for c in categories)):
            raise LocalTaskError(f"{categories_path}: expected a JSON list of label strings")
    train_path = find_file(data.path, "train.csv")
    test_path = find_file(data.path, "test.csv")
    train_x, train_y = _read_labeled_csv(train_path, categories, categories_path)
    test_x, test_y = _read_labeled_csv(test_path, categories, categories_path)
    names = categories or sorted(set(train_y) | set(test_y))
    index = {name: i for i, name in enumerate(names)}
    unseen = sorted(set(test_y) - set(train_y))
    if unseen:
        raise LocalTaskError(f"{test_path}: labels {unseen[:5]} never occur in {train_path.name}; a classifier cannot learn them")
    train_keep = _balanced_head(train_y, train_limit)
    test_keep = _balanced_head(test_y, limit)
    data.subsets["default"] = {
        "train": {"text": [train_x[i] for i in train_keep], "label": [index[train_y[i]] for i in train_keep]},
        "test": {"text": [test_x[i] for i in test_keep], "label": [index[test_y[i]] for i in test_keep]},
    }
    data.full_rows["default"] = len(test_x)
    data.rows["default"] = len(test_keep)


def _balanced_head(labels: list[str], limit: int | None) -> list[int]:
    """Row indices of the first `limit` rows taken round-robin over labels (files are sorted by label,
    so a plain head would keep one class), in file order; all rows when `limit` is None."""
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    queues = list(by_label.values())
    keep: list[int] = []
    depth = 0
    while len(keep) < limit:
        for q in queues:
            if depth < len(q) and len(keep) < limit:
                keep.append(q[depth])
        depth += 1
    return sorted(keep)


# ------------------------------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class Layout:
    """One on-disk benchmark format: how to recognise it, read it, and which mteb task it feeds."""

    name: str
    mteb_task: str                      # the mteb task it feeds when tasks[].name is not given
    task_type: str                      # mteb's task type; a named mteb task must be of this type
    recognises: Callable[[set[str]], bool]  # from the folder's file names (".gz" removed)
    load: Callable[..., None]


def _any(pattern: str) -> Callable[[set[str]], bool]:
    return lambda names: any(re.fullmatch(pattern, n) for n in names)


# In detection order: the first layout that recognises a folder's files wins.
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout("stsbenchmark", "STSBenchmark", "STS", lambda names: "sts-test.csv" in names, _load_stsbenchmark),
    Layout("stsb_multi_mt", "STSBenchmarkMultilingualSTS", "STS", _any(r"stsb-[a-z]+-test\.csv"), _load_stsb_multi),
    Layout("beir", "SciFact", "Retrieval", lambda names: bool({"corpus.jsonl", "queries.jsonl", "qrels"} & names),
           _load_beir),
    Layout("tatoeba", "Tatoeba", "BitextMining", _any(r"tatoeba\.[a-z]+-eng\.[a-z]+"), _load_tatoeba),
    Layout("banking77", "Banking77Classification", "Classification",
           lambda names: {"train.csv", "test.csv"} <= names, _load_banking77),
)}


def detect_layout(folder: Path) -> str:
    """Guess the layout from the file names present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LocalTaskError(f"{folder}: not a folder (tasks[].path must be a local task folder)")
    names = {p.name.removesuffix(".gz") for p in folder.iterdir()}
    for layout in LAYOUTS.values():
        if layout.recognises(names):
            return layout.name
    raise LocalTaskError(
        f"{folder}: no known layout recognised ({', '.join(LAYOUTS)}); set tasks[].layout or check the files"
    )


def load_folder(
    folder: str | Path,
    layout: str = "auto",
    limit: int | None = None,
    subsets: list[str] | None = None,
    corpus_limit: int | None = None,
    train_limit: int | None = None,
) -> LocalData:
    """Parse and check a local task folder. `limit` keeps the first N pairs / queries / test rows."""
    folder = Path(folder).expanduser()
    if layout == "auto":
        layout = detect_layout(folder)
    if layout not in LAYOUTS:
        raise LocalTaskError(f"tasks[].layout: unknown layout {layout!r}; use one of {', '.join(LAYOUTS)} or auto")
    if not folder.is_dir():
        raise LocalTaskError(f"{folder}: not a folder (tasks[].path must be a local task folder)")
    data = LocalData(layout=layout, path=folder)
    LAYOUTS[layout].load(data, limit=limit, subsets=subsets, corpus_limit=corpus_limit, train_limit=train_limit)
    if not data.subsets:
        raise LocalTaskError(f"{folder}: no data found for layout {layout} (subsets filter: {subsets})")
    return data


# ------------------------------------------------------------------------------------ to mteb tasks
def to_hf_dataset(data: LocalData) -> dict:
    """The nested dict of `datasets.Dataset` objects that mteb's task classes read."""
    from datasets import Dataset

    out: dict = {}
    for subset, splits in data.subsets.items():
        out[subset] = {}
        for split, columns in splits.items():
            if data.layout == "beir":
                out[subset][split] = {
                    "corpus": Dataset.from_dict(columns["corpus"]),
                    "queries": Dataset.from_dict(columns["queries"]),
                    "relevant_docs": columns["relevant_docs"],
                    "top_ranked": None,
                }
            else:
                out[subset][split] = Dataset.from_dict(columns)
    return out


def build_task(data: LocalData, name: str | None = None):
    """An mteb task object of the layout's type holding `data` (no hub access).

    `name` defaults to the mteb task of the layout. A known mteb task name keeps that task's metadata (its
    prompt, main score and subsets); an unknown name makes a renamed copy of the layout's default task.
    """
    import mteb

    layout = LAYOUTS[data.layout]
    default = layout.mteb_task
    name = name or default
    try:
        probe = mteb.get_task(name)
        known = True
    except KeyError:
        probe, known = mteb.get_task(default), False
    if probe.metadata.type != layout.task_type:
        raise LocalTaskError(
            f"tasks[].name={name!r} is an mteb {probe.metadata.type} task but {data.path} has the "
            f"{data.layout} layout ({layout.task_type})"
        )
    subsets = list(data.subsets)
    if known and set(probe.hf_subsets) != {"default"}:
        unknown = [s for s in subsets if s not in probe.hf_subsets]
        if unknown:
            log.warning("%s: subsets %s are not part of mteb's %s; skipping them", data.path, unknown, name)
            subsets = [s for s in subsets if s in probe.hf_subsets]
            for s in unknown:
                data.subsets.pop(s)
        if not subsets:
            raise LocalTaskError(f"{data.path}: none of its subsets belong to mteb's {name}")
        task = mteb.get_task(name, hf_subsets=subsets, eval_splits=["test"])
    else:
        task = mteb.get_task(name if known else default, eval_splits=["test"])
    if not known:
        cls_prompt = type(task).abstask_prompt if hasattr(type(task), "abstask_prompt") else None
        task.metadata = task.metadata.model_copy(
            update={
                "name": name,
                "dataset": {"path": str(data.path), "revision": "local"},
                "prompt": task.metadata.prompt or cls_prompt,
            }
        )
        if set(task.hf_subsets) != set(data.subsets):
            task.hf_subsets = list(data.subsets)
    task.dataset = to_hf_dataset(data)
    task.data_loaded = True
    return task
