"""Training examples: read Parquet sources, mix them by ratio, cut deterministic global batches, collate.

The order of examples is a pure function of (sources, ratios, seed, epoch), so the data position of a
run is just the step number: a resumed worker recomputes the same order and skips `step * batch_size`
examples. Every worker computes the same order and takes its own contiguous slice of each global
batch, so worker 0's rows followed by worker 1's rows are exactly the single-worker batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from synthembed.train.config import DataSource
from synthembed.train.schedule import count_steps

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# Columns of the data contract (DESIGN.md) that training reads; others are carried along unused.
REQUIRED_COLUMNS = ("query", "positive")
TRAIN_COLUMNS = ("id", "task_type", "instruction", "query", "positive", "hard_negative", "language")


def source_files(source: DataSource) -> list[Path]:
    """The Parquet files of one source: a file, a folder of files, or a generate output folder."""
    path = Path(source.path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        folder = path / "examples" if (path / "examples").is_dir() else path
        files = sorted(folder.glob("*.parquet"))
        if files:
            return files
        raise FileNotFoundError(f"train.data path={source.path!r}: no *.parquet files in {folder}")
    raise FileNotFoundError(f"train.data path={source.path!r}: no such file or folder")


def read_source(source: DataSource) -> "pa.Table":
    """Read one source into a table with TRAIN_COLUMNS (missing optional columns become nulls)."""
    # Deferred: the training step (gradcache, the GPU device check) needs this module, not Arrow.
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in source_files(source):
        table = pq.read_table(file)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(
                f"train.data path={source.path!r}: {file.name} lacks column(s) {missing}; expected the data "
                f"contract schema ({', '.join(TRAIN_COLUMNS)})"
            )
        cols = {}
        for name in TRAIN_COLUMNS:
            if name in table.column_names:
                cols[name] = table.column(name).cast(pa.string())
            else:
                cols[name] = pa.nulls(table.num_rows, pa.string())
        tables.append(pa.table(cols))
    table = pa.concat_tables(tables)
    if source.instruction:
        inst = table.column("instruction").to_pylist()
        filled = [i if i and i.strip() else source.instruction for i in inst]
        table = table.set_column(table.column_names.index("instruction"), "instruction", pa.array(filled, pa.string()))
    return table


@dataclass
class Examples:
    """The mixed training set as plain columns (Python lists index fast and pickle small)."""

    instruction: list[str | None]
    query: list[str]
    positive: list[str]
    hard_negative: list[str | None]
    task_type: list[str | None] | None = None  # for BatchPlan's same-task batches; mix_sources always fills it

    def __len__(self) -> int:
        return len(self.query)

    def take(self, idx: Sequence[int]) -> "Examples":
        task_type = None if self.task_type is None else [self.task_type[i] for i in idx]
        return Examples(*([col[i] for i in idx] for col in (self.instruction, self.query, self.positive, self.hard_negative)),
                        task_type=task_type)


def mixed_size(n_rows: int, ratio: float) -> int:
    """How many examples a source of `n_rows` rows gives per epoch at `ratio`."""
    whole = int(ratio)
    return whole * n_rows + round((ratio - whole) * n_rows)


def mix_sources(sources: Sequence[DataSource], seed: int = 0) -> Examples:
    """Concatenate sources, each sampled by its ratio (floor(ratio) full copies + a random remainder)."""
    import pyarrow as pa

    if not sources:
        raise ValueError("train.data is empty: give at least one source, e.g. --set 'train.data=[{path: out/gen}]'")
    rng = np.random.default_rng(seed)
    parts = []
    for source in sources:
        table = read_source(source)
        n = table.num_rows
        whole = int(source.ratio)
        idx = np.concatenate([np.tile(np.arange(n), whole),
                              rng.choice(n, size=mixed_size(n, source.ratio) - whole * n, replace=False)])
        log.info("train.data %s: %d rows, ratio %.3g -> %d examples", source.path, n, source.ratio, len(idx))
        parts.append(table.take(pa.array(idx.astype(np.int64))))
    table = pa.concat_tables(parts)
    bad = [i for i, (q, p) in enumerate(zip(table.column("query").to_pylist(), table.column("positive").to_pylist())) if not q or not p]
    if bad:
        raise ValueError(f"train.data: {len(bad)} rows have an empty query or positive (first at mixed row {bad[0]})")
    return Examples(
        instruction=table.column("instruction").to_pylist(),
        query=table.column("query").to_pylist(),
        positive=table.column("positive").to_pylist(),
        hard_negative=[h if h else None for h in table.column("hard_negative").to_pylist()],
        task_type=table.column("task_type").to_pylist(),
    )


class BatchPlan:
    """Which examples form global batch `step`, and which slice of it belongs to a worker.

    Epoch e is a permutation of all examples seeded by (seed, e); a global batch never spans two
    epochs (the tail of an epoch that does not fill a batch is dropped).

    With `groups` (one label per example, e.g. its task_type) each group's permuted examples are cut into
    whole batches first; the groups' leftovers, pooled and shuffled, fill mixed batches; then the
    batches are shuffled. Every whole batch of a group stays one group, and since the leftovers are pooled
    before cutting, an epoch has floor(n / batch_size) batches either way: schedules and resumption are
    unchanged.
    """

    def __init__(self, n_examples: int, batch_size: int, epochs: float, seed: int, max_steps: int | None = None,
                 groups: Sequence[str | None] | None = None):
        if n_examples < batch_size:
            raise ValueError(f"train.batch_size={batch_size} but the mixed data has only {n_examples} examples")
        if groups is not None and len(groups) != n_examples:
            raise ValueError(f"BatchPlan: {len(groups)} group labels for {n_examples} examples")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self.groups = None if groups is None else np.array([str(g) for g in groups])
        self.steps_per_epoch, self.total_steps = count_steps(n_examples, batch_size, epochs, max_steps)
        self._perm: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            if self.groups is not None:
                perm = self._grouped(perm, rng)
            self._perm = {epoch: perm}
        return self._perm[epoch]

    def _grouped(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = self.batch_size
        labels = self.groups[perm]
        batches, leftover = [], []
        for label in sorted(set(labels)):
            members = perm[labels == label]  # in permutation order
            whole = len(members) // b * b
            batches += list(members[:whole].reshape(-1, b))
            leftover.append(members[whole:])
        rest = rng.permutation(np.concatenate(leftover))
        batches += list(rest[: len(rest) // b * b].reshape(-1, b))
        order = rng.permutation(len(batches))
        return np.concatenate([batches[i] for i in order] + [rest[len(rest) // b * b:]])

    def indices(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        batch = self._permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        share = self.batch_size // world_size
        return batch[rank * share : (rank + 1) * share].tolist()

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


def text_key(text: str) -> int:
    """A 63-bit hash of the exact text: equal keys mean equal documents (for duplicate masking)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


@dataclass
class ContrastiveBatch:
    """One worker's share of a step, tokenized. Documents are [positives; present hard negatives]."""

    query_ids: list[list[int]]
    doc_ids: list[list[int]]
    pos_keys: torch.Tensor  # [n_queries] int64, text_key of each query's positive
    doc_keys: torch.Tensor  # [n_docs] int64, text_key of each document

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)


class ContrastiveCollator:
    """Tokenize with the shared Embedder: queries with their row's instruction, documents raw."""

    def __init__(self, embedder, max_length: int, hard_negatives: bool = True):
        self.embedder, self.max_length, self.hard_negatives = embedder, max_length, hard_negatives

    def __call__(self, ex: Examples) -> ContrastiveBatch:
        negs = [h for h in ex.hard_negative if h] if self.hard_negatives else []
        docs = list(ex.positive) + negs
        return ContrastiveBatch(
            query_ids=self.embedder.tokenize(ex.query, instruction=list(ex.instruction), max_length=self.max_length),
            doc_ids=self.embedder.tokenize(docs, max_length=self.max_length),
            pos_keys=torch.tensor([text_key(p) for p in ex.positive], dtype=torch.long),
            doc_keys=torch.tensor([text_key(d) for d in docs], dtype=torch.long),
        )


def data_fingerprint(sources: Sequence[DataSource], n_examples: int, seed: int, same_task_batches: bool = False) -> str:
    """Identifies the mixed data and its batch order; a resumed run refuses a checkpoint made with other data."""
    parts = [f"{seed}:{n_examples}"] + (["same_task_batches"] if same_task_batches else [])
    for s in sources:
        for f in source_files(s):
            st = f.stat()
            parts.append(f"{f.resolve()}:{st.st_size}:{s.ratio}:{s.instruction}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
