"""The run-folder contract every stage follows (generate, train, evaluate, embed; the pipeline composes them).

A stage's output folder holds:

    stage.json      written first: the stage's name and **fingerprint** (the hash of everything that decides
                    its outputs: the config fields that matter, the fingerprints of its inputs' manifests,
                    the model it used)
    config.yaml     the resolved config
    ...             outputs, each written to a temporary name and renamed (`write_text`, `write_json`)
    manifest.json   written last, atomically, holding the same fingerprint

The rules, in one place:

- **complete** means a manifest whose fingerprint equals the one the stage computes now; a file that merely
  exists means nothing (`StageFolder.complete`);
- a folder begun under another fingerprint belongs to another run: `begin` moves it aside to
  `<folder>.superseded-<n>` (nothing finished is deleted) and the stage starts fresh; under the same
  fingerprint `begin` keeps it (minus the temporary files a killed run left), and the stage resumes from
  what it finds; a stage whose output can grow (generate: a larger `num_examples`) passes `grows_from`,
  and a folder it accepts is kept and extended under the new fingerprint instead of moved aside;
- a stage's fingerprint includes its inputs' manifest fingerprints (`input_fingerprint`), so a re-run
  upstream stage changes every downstream fingerprint and the downstream stages run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthembed.packaged import cache_dir

log = logging.getLogger(__name__)

MANIFEST, STAGE_FILE = "manifest.json", "stage.json"


def fingerprint(*parts: Any, n: int = 20) -> str:
    """A stable hash of JSON-able parts (dict keys sorted): `n` hex digits of their sha256."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:n]


def files_fingerprint(path: str | Path) -> str:
    """Hash of the names, sizes and contents of the files under `path` (or of the one file `path` is).

    Inputs without a manifest (a model folder, a labeled dataset, the evaluation sets decontamination checks
    against) and the embedding cache's model fingerprint are keyed by it. Contents, not mtimes: a copy, a
    fresh clone or a re-download of the same files (new mtimes) must not re-run a finished stage downstream
    (a decontamination pass re-run on new mtimes of the evaluation sets re-ran a 22-minute training).
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    h = hashlib.sha256()
    with _DigestMemo() as memo:
        for p in files:
            name = p.name if p == root else p.relative_to(root)
            h.update(f"{name}:{p.stat().st_size}:{memo.digest(p)}\n".encode())
    return h.hexdigest()


class _DigestMemo:
    """sha256 of files' bytes, remembered per (path, size, mtime, inode) in `$SYNTHEMBED_CACHE/file-digests.sqlite`.

    Hand-written because hashing a 7B model's 15 GB on every fingerprint costs ~10 s: the memo makes a repeat
    free, and a changed mtime costs one re-hash, never a wrong answer. A missing, read-only or locked memo
    only means hashing every time.
    """

    def __enter__(self) -> "_DigestMemo":
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(cache_dir() / "file-digests.sqlite", timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS digest (path TEXT PRIMARY KEY, size INT, mtime_ns INT, "
                            "inode INT, sha256 TEXT)")
        except (OSError, sqlite3.Error) as err:
            log.debug("file digest memo unavailable: %s", err)
            self.db = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.db is not None:
            self.db.close()

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        try:
            if self.db is not None:
                row = self.db.execute("SELECT sha256 FROM digest WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
                                      key).fetchone()
                if row:
                    return row[0]
        except sqlite3.Error as err:
            log.debug("file digest memo unreadable: %s", err)
        digest = sha256_of_file(path)
        try:
            if self.db is not None:
                with self.db:
                    self.db.execute("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?, ?)", (*key, digest))
        except sqlite3.Error as err:
            log.debug("file digest memo not written: %s", err)
        return digest


def sha256_of_file(path: Path) -> str:
    # hashlib.file_digest does this in one call, but only from Python 3.11; we support 3.10.
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def input_fingerprint(folder: str | Path) -> str:
    """An input's identity: its manifest's fingerprint when it is a stage folder, else its files'."""
    manifest = Path(folder) / MANIFEST
    if manifest.is_file():
        try:
            fp = json.loads(manifest.read_text()).get("fingerprint")
        except ValueError:
            fp = None
        if fp:
            return fp
    return files_fingerprint(folder)


def write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


class StageFolder:
    """One stage's run folder under one fingerprint (see the module docstring)."""

    def __init__(self, path: str | Path, stage: str, fp: str, grows_from: Callable[[Path], bool] | None = None):
        self.path, self.stage, self.fingerprint = Path(path), stage, fp
        self.grows_from = grows_from  # folder -> True when this run extends what that folder holds

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def complete(self) -> dict | None:
        """The manifest, when this folder holds a finished run of exactly this fingerprint."""
        m = self.manifest()
        if m and m.get("complete") and m.get("fingerprint") == self.fingerprint and m.get("stage") == self.stage:
            return m
        return None

    def begin(self, config_yaml: str | None = None) -> "StageFolder":
        """Claim the folder for this fingerprint (moving another run's folder aside) and write the config."""
        old = self._begun()
        if old is not None and old != self.fingerprint and self.grows_from is not None and self.grows_from(self.path):
            log.info("%s: %s was begun under fingerprint %s; this run extends it (now %s)",
                     self.stage, self.path, old, self.fingerprint)
        elif old != self.fingerprint and self.path.is_dir() and any(self.path.iterdir()):
            # Another run's folder, or files no stage claimed (old is None): never resumed, never deleted.
            aside = self._aside()
            self.path.rename(aside)
            log.warning("%s: %s held another run (fingerprint %s, now %s); moved it to %s and starting fresh",
                        self.stage, self.path, old or "none: no stage.json", self.fingerprint, aside)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MANIFEST).unlink(missing_ok=True)  # complete only once finish() writes a new one
        for tmp in self.path.rglob(".*.tmp*"):  # half-written files of a killed run: never trusted, now gone
            if tmp.is_file():
                tmp.unlink()
        write_json(self.path / STAGE_FILE, {"stage": self.stage, "fingerprint": self.fingerprint,
                                            "begun": _now()})
        if config_yaml is not None:
            write_text(self.path / "config.yaml", config_yaml)
        return self

    def finish(self, manifest: dict, fingerprint: str | None = None) -> dict:
        """Write the manifest last, atomically; from now on the folder is complete for this fingerprint.

        A stage that stops early with usable output (generate's time budget) passes its own `fingerprint`:
        the folder is then never complete for the stage, which continues it on the next run, while its
        consumers see an input that changes whenever it grows."""
        full = {"stage": self.stage, "fingerprint": fingerprint or self.fingerprint, "complete": True,
                "created": _now(), **manifest}
        write_json(self.path / MANIFEST, full)
        return full

    def _begun(self) -> str | None:
        try:
            return json.loads((self.path / STAGE_FILE).read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None

    def _aside(self) -> Path:
        n = 1
        while (aside := self.path.with_name(f"{self.path.name}.superseded-{n}")).exists():
            n += 1
        return aside


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
