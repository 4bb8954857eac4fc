"""The spend ledger of a synth run: what was booked, sent, billed and decided, durable across kills.

One JSON object a line, appended and fsynced before the run goes on (the file sits next to the
output, on Drive in Colab). Three kinds of line:

    {"reserve": A, "ids": [...], "usd": [...]}        booked BEFORE anything is sent: attempt A
                                                       covers these trace ids, each booked at its
                                                       worst-case USD
    {"batch": B, "attempt": A}                         attempt A was created on the server as
                                                       Message Batch B
    {"batch_done": B}                                  every result of batch B is recorded below
    {"id": ..., "outcome": ..., "usd": ..., "attempt": A, ...}
                                                       the outcome of one request (kept, a reject
                                                       reason, "api_error", "interrupted")

Ledgers written before reservations existed hold only outcome lines; they read the same.

What a kill leaves, and what a re-run does with it (`Ledger.__init__`):
- an attempt with no outcome and no batch (a direct request in flight, or a batch whose create
  call never answered): it may have been billed, so it is charged its worst case and closed with
  "interrupted" outcome lines; its ids are tried again.
- a batch not marked done: it lives on the server; `open_batches` hands it back so the run polls
  it again instead of submitting it twice. Its ids without an outcome stay booked meanwhile.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("synth")
NOT_DONE = ("api_error", "interrupted")   # outcomes whose trace id is tried again


def read_jsonl_repair(path: Path) -> list[dict]:
    """Read a JSONL file we append to; a final line cut off by a crash is removed from the file
    (it was never complete, so what it recorded is simply redone).

    Raises:
        ValueError: naming the file and line for a corrupt line that is not the last one.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        log.warning("%s: removing an incomplete last line (%d bytes) left by an interrupted run",
                    path, len(raw) - keep)
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        raw = raw[:keep]
    from havoc_lite.data.readers import read_jsonl  # the kit's one JSONL reader (errors name file:line)
    return read_jsonl(path)


def append_line(f, obj: dict) -> None:
    """Append one JSON line and make it durable (flush + fsync) before going on."""
    f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


@dataclass
class OpenBatch:
    """A batch created on the server whose results are not all recorded yet."""
    batch_id: str
    attempt: str
    usd: dict[str, float]   # id -> booked worst case, for the ids that have no outcome yet


class Ledger:
    """Load (and repair) a ledger, then append to it.

    Attributes:
        outcomes: the outcome lines, in order.
        spent: USD of every outcome line (what was billed, or charged as a worst case).
        reserved: USD still booked by open batches.
        done: trace ids with a final outcome (kept or rejected); others may be tried again.
        open_batches: batches to poll again.
    Raises (from the constructor):
        ValueError: a corrupt line that is not the last one (file and line named).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        rows = read_jsonl_repair(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        attempts: dict[str, dict] = {}
        batches: dict[str, str] = {}          # attempt -> batch id
        done_batches: set[str] = set()
        self.outcomes: list[dict] = []
        for r in rows:
            if "reserve" in r:
                attempts[r["reserve"]] = r
            elif "batch" in r:
                batches[r["attempt"]] = r["batch"]
            elif "batch_done" in r:
                done_batches.add(r["batch_done"])
            elif "id" in r:
                self.outcomes.append(r)
        settled: dict[str, set[str]] = {}
        for r in self.outcomes:
            if r.get("attempt"):
                settled.setdefault(r["attempt"], set()).add(r["id"])
        self.open_batches: list[OpenBatch] = []
        for a, r in attempts.items():
            left = {i: float(w) for i, w in zip(r["ids"], r["usd"]) if i not in settled.get(a, set())}
            if not left or batches.get(a) in done_batches:
                continue
            if a in batches:
                self.open_batches.append(OpenBatch(batches[a], a, left))
                continue
            log.warning("%d request(s) of attempt %s were in flight when the last run stopped: "
                        "charging their worst case ($%.4f) and trying them again", len(left), a,
                        sum(left.values()))
            for i, w in left.items():
                self.outcome({"id": i, "outcome": "interrupted", "detail": "in flight at a kill; "
                              "charged its worst case", "usd": w, "attempt": a})

    @property
    def spent(self) -> float:
        return sum(float(r.get("usd", 0.0)) for r in self.outcomes)

    @property
    def reserved(self) -> float:
        return sum(sum(b.usd.values()) for b in self.open_batches)

    @property
    def done(self) -> set[str]:
        return {r["id"] for r in self.outcomes if r.get("outcome") not in NOT_DONE}

    def reserve(self, attempt: str, usd: dict[str, float]) -> None:
        """Book `usd[id]` (its worst case) for each id before the request (or batch) is sent."""
        append_line(self._f, {"reserve": attempt, "ids": list(usd), "usd": list(usd.values())})

    def batch_created(self, attempt: str, batch_id: str) -> None:
        append_line(self._f, {"batch": batch_id, "attempt": attempt})

    def batch_done(self, batch_id: str) -> None:
        append_line(self._f, {"batch_done": batch_id})

    def outcome(self, record: dict) -> None:
        """Record one request's outcome (`id`, `outcome`, `usd`, `attempt`, ...)."""
        append_line(self._f, record)
        self.outcomes.append(record)

    def close(self) -> None:
        self._f.close()
