"""rag: BM25 search over a folder of local .md / .txt notes (bm25s).

Files are split into passages: a markdown heading starts a new passage, and paragraphs are
joined until a passage reaches about `passage_chars` (500) characters; each passage keeps its section
heading so a hit reads on its own. The index (bm25s arrays + passages.json) is saved under
`cache_dir/<folder digest>/` and reloaded while the folder's fingerprint (each file's relative
path, size and mtime) is unchanged; any edit rebuilds it. Default folder: the bundled corpus
`havoc_lite/assets/corpus`. Default cache: $HAVOC_LITE_CACHE or ~/.cache/havoc_lite, falling back
to a temp folder when that is not writable.

Words are stemmed with PyStemmer's English Snowball stemmer when it is installed (`pip install
PyStemmer`, what bm25s recommends: "means" then matches "mean"); without it words match only as
written. Which one built an index is part of its fingerprint.

Scoring is BM25 (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework") with bm25s'
Lucene variant, k1=1.5, b=0.75.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from .registry import ToolError

WORKER_PRELOAD = ["bm25s"]   # imported when the worker starts, not per call

CORPUS_DIR = Path(__file__).resolve().parents[1] / "assets" / "corpus"
SUFFIXES = (".md", ".txt")
MAX_FILES = 2000
MAX_FILE_BYTES = 2_000_000
INDEX_VERSION = 1


def _stemmer():
    """PyStemmer's English stemmer, or None when PyStemmer is not installed."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s
    return bm25s.tokenize(texts, return_ids=False, stemmer=_stemmer(), show_progress=False)

SCHEMA = {
    "properties": {"query": {"type": "string", "maxLength": 500},
                   "k": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["query"],
}
DESCRIPTION = ("Search local notes (statistics tests, effect sizes, design of experiments, "
               "calculus rules, the markup) with BM25: query, k (default 3). Returns passages with "
               "their source file and score.")


def default_cache_dir() -> Path:
    return Path(os.environ.get("HAVOC_LITE_CACHE", Path.home() / ".cache" / "havoc_lite"))


def split_passages(text: str, passage_chars: int = 500) -> list[str]:
    """Split markdown/plain text into passages of about `passage_chars` characters.

    A heading line (`#`…) closes the current passage and becomes the title of the next ones;
    blank lines separate paragraphs; a paragraph longer than `passage_chars` is kept whole.
    """
    passages, heading, buf = [], "", []

    def flush():
        body = "\n\n".join(buf).strip()
        if body:
            passages.append(f"{heading}\n{body}" if heading else body)
        buf.clear()

    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        lines = para.splitlines()
        while lines and lines[0].lstrip().startswith("#"):
            flush()
            heading = lines.pop(0).strip()
        para = "\n".join(lines).strip()
        if not para:
            continue
        if buf and sum(len(b) for b in buf) + len(para) > passage_chars:
            flush()
        buf.append(para)
    flush()
    return passages


class RagIndex:
    """BM25 index over the .md/.txt files under `folder` (recursively).

    Args:
        folder: the notes folder. Raises ToolError when it is missing or has no text files.
        cache_dir: where the index is persisted (see module doc).
        passage_chars: target passage length in characters.
    """

    def __init__(self, folder: Union[str, Path, None] = None,
                 cache_dir: Union[str, Path, None] = None, passage_chars: int = 500):
        self.folder = Path(folder or CORPUS_DIR).expanduser().resolve()
        if not self.folder.is_dir():
            raise ToolError(f"rag folder {self.folder} does not exist")
        self.passage_chars = passage_chars
        self.files = self._files()
        self.fingerprint = self._fingerprint()
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
        self.index_dir = base / "rag" / digest
        self.loaded_from_cache = False
        self._load_or_build()

    def _files(self) -> list[Path]:
        files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in SUFFIXES
                       and p.is_file() and not any(part.startswith(".") for part in
                                                   p.relative_to(self.folder).parts))
        if not files:
            raise ToolError(f"rag folder {self.folder} has no .md or .txt files")
        if len(files) > MAX_FILES:
            raise ToolError(f"rag folder {self.folder} has {len(files)} files, limit {MAX_FILES}")
        return files

    def _fingerprint(self) -> str:
        h = hashlib.sha256(f"v{INDEX_VERSION} chars={self.passage_chars} "
                           f"stem={_stemmer() is not None}".encode())
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def is_stale(self) -> bool:
        """True when files were added, removed or changed since the index was built."""
        try:
            self.files = self._files()
        except ToolError:
            return True
        return self._fingerprint() != self.fingerprint

    def _load_or_build(self) -> None:
        import bm25s
        meta = self.index_dir / "passages.json"
        try:
            saved = json.loads(meta.read_text(encoding="utf-8"))
            if saved["fingerprint"] == self.fingerprint:
                self.passages, self.sources = saved["passages"], saved["sources"]
                self.bm25 = bm25s.BM25.load(str(self.index_dir), show_progress=False)
                self.loaded_from_cache = True
                return
        except (OSError, ValueError, KeyError):
            pass
        self.passages, self.sources = [], []
        for p in self.files:
            if p.stat().st_size > MAX_FILE_BYTES:
                continue                       # a stray dump must not stall the index
            text = p.read_text(encoding="utf-8", errors="replace")
            for passage in split_passages(text, self.passage_chars):
                self.passages.append(passage)
                self.sources.append(str(p.relative_to(self.folder)))
        if not self.passages:
            raise ToolError(f"rag folder {self.folder} has no text to index")
        self.bm25 = bm25s.BM25()
        self.bm25.index(_tokenize(self.passages), show_progress=False)
        self._save()

    def _save(self) -> None:
        """Write the index to a temp folder, then swap it in (a crash never leaves half an index)."""
        for base in (self.index_dir.parent, Path(tempfile.gettempdir()) / "havoc_lite_rag"):
            try:
                base.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp_"))
                self.bm25.save(str(tmp), show_progress=False)
                (tmp / "passages.json").write_text(json.dumps(
                    {"fingerprint": self.fingerprint, "folder": str(self.folder),
                     "passages": self.passages, "sources": self.sources}, ensure_ascii=False),
                    encoding="utf-8")
                target = base / self.index_dir.name
                if target.exists():
                    shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
                self.index_dir = target
                return
            except OSError:
                continue                      # read-only home: try the temp folder; else unsaved

    def search(self, query: str, k: int = 3) -> list[dict]:
        """Top-`k` passages for `query`: [{"source": relative path, "score": BM25 score rounded
        to 4 significant digits, "text": passage}], best first; passages scoring 0 are left out."""
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query: is empty")
        tokens = _tokenize([query])
        if not tokens[0]:
            raise ToolError("query: has no searchable words (only stopwords or symbols)")
        k = max(1, min(int(k), len(self.passages)))
        docs, scores = self.bm25.retrieve(tokens, k=k, show_progress=False)
        hits = []
        for i, s in zip(docs[0], scores[0]):
            if s > 0:
                hits.append({"source": self.sources[int(i)], "score": float(f"{float(s):.4g}"),
                             "text": self.passages[int(i)]})
        return hits


_INDEXES: dict[tuple, RagIndex] = {}


def get_index(folder: Union[str, Path, None] = None,
              cache_dir: Union[str, Path, None] = None) -> RagIndex:
    """A process-wide RagIndex for `folder`, rebuilt when its files change."""
    key = (str(Path(folder or CORPUS_DIR).expanduser().resolve()), str(cache_dir))
    idx = _INDEXES.get(key)
    if idx is None or idx.is_stale():
        idx = _INDEXES[key] = RagIndex(folder, cache_dir)
    return idx


def rag_search(query: str, k: int = 3, folder: Optional[str] = None,
               cache_dir: Optional[str] = None) -> dict:
    """The tool: {"passages": [{"source", "score", "text"}, ...]} (empty when nothing matches).
    `folder` and `cache_dir` are bound by the registry, not given by the model."""
    return {"passages": get_index(folder, cache_dir).search(query, k)}


def register(registry, folder: Union[str, Path, None] = None,
             cache_dir: Union[str, Path, None] = None) -> None:
    """Add rag over `folder` (default: the bundled corpus) to a ToolRegistry (worker process)."""
    bound = {"folder": str(Path(folder or CORPUS_DIR).expanduser().resolve()),
             "cache_dir": str(cache_dir) if cache_dir else None}
    registry.register("rag", rag_search, SCHEMA, DESCRIPTION, isolate=True, bound=bound)
