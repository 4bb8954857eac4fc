"""Data: reading text corpora, pretraining token shards, SFT examples and their batch loaders.

One job per file:

| file | job |
| --- | --- |
| `readers.py` | the one JSONL / text reader (also used by eval and synth) |
| `stream.py` | counter-based, rank-strided sampling and the resumable loader base |
| `shards.py` | `prepare_pretraining`: a corpus folder -> token shards + `index.json` |
| `pretrain.py` | `PretrainLoader`: weighted domain mix over the shards |
| `formats.py` | every SFT JSONL kind -> messages; the one tool-trace renderer |
| `sft.py` | `SFTMixture`, `SFTLoader` (one example per row) |
| `packing.py` | `PackedSFTLoader`: several examples per row, best-fit |
| `hub.py` | hub SFT data sets -> messages |

Every loader follows one protocol: `next_batch() -> (x, y)`, LongTensors [B, T] with y the
aligned targets (y[:, t] is the token after x[:, t], -100 = no loss); a packed loader adds a
third tensor, the per-example positions (`PackedSFTLoader`); plus `state_dict()` /
`load_state_dict()` so a resumed run sees exactly the batches it would have seen.
"""
from ..errors import DataError
from .formats import (SFT_KINDS, detect_kind, gsm8k_to_trace, load_jsonl_examples, record_to_messages,
                      render_trace, trace_to_messages)
from .hub import HUB_DATASETS, hub_record_to_messages, load_hub_sft
from .packing import PackedSFTLoader
from .pretrain import PretrainLoader
from .readers import (JSONL_SUFFIXES, TEXT_SUFFIXES, PathLike, iter_jsonl, iter_lines, iter_text_blocks,
                      list_data_files, read_jsonl)
from .sft import (CHARS_PER_TOKEN_BOUND, DROP_CHECK_SAMPLE, SFT_MIXTURES, SFTLoader, SFTMixture,
                  clip_messages)
from .shards import INDEX_FORMAT, prepare_pretraining
from .stream import DEFAULT_DOMAIN_WEIGHTS, StreamLoader

__all__ = ["DataError", "SFT_KINDS", "detect_kind", "gsm8k_to_trace", "load_jsonl_examples",
           "record_to_messages", "render_trace", "trace_to_messages", "HUB_DATASETS",
           "hub_record_to_messages", "load_hub_sft", "PackedSFTLoader", "PretrainLoader", "JSONL_SUFFIXES", "TEXT_SUFFIXES",
           "PathLike", "iter_jsonl", "iter_lines", "iter_text_blocks", "list_data_files", "read_jsonl",
           "CHARS_PER_TOKEN_BOUND", "DROP_CHECK_SAMPLE", "SFT_MIXTURES", "SFTLoader", "SFTMixture",
           "clip_messages", "INDEX_FORMAT", "prepare_pretraining", "DEFAULT_DOMAIN_WEIGHTS", "StreamLoader"]
