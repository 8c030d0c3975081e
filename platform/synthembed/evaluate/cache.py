"""An on-disk embedding cache keyed by (model fingerprint, exact input string).

Re-running an evaluation (a second classification protocol, a report for another run that shares the base
model, a resumed job) re-encodes nothing that was encoded before. Vectors are stored *un-normalised*, so
one cached vector serves both the normalised and the un-normalised protocol.

    key = sha256(fingerprint + "\\0" + input)      # input = the exact string the model reads

The fingerprint covers everything that changes an embedding: weight files (names, sizes, contents: a
copied or re-downloaded model keeps its vectors), the adapter's files, pooling-relevant settings (max_length,
dtype). SQLite gives atomic writes and lets several
processes share the file.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class EmbeddingCache:
    """`get(texts) -> (vectors or None per text)`, `put(texts, vectors)` for one model fingerprint."""

    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self._db = sqlite3.connect(str(self.path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, dim INTEGER, vec BLOB)")
        self._db.commit()

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self.fingerprint.encode() + b"\0" + text.encode("utf-8")).digest()

    def get(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        keys = [self.key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for k, vec in rows:
                found[k] = np.frombuffer(vec, dtype=np.float32)
        return [found.get(k) for k in keys]

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = [(self.key(t), int(v.shape[0]), v.tobytes()) for t, v in zip(texts, vectors)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
