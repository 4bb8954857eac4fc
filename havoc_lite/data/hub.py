"""Hugging Face Hub SFT data sets mapped onto messages (OpenMathInstruct-2, SlimOrca, CoT-Collection,
GSM8K), through `datasets`."""
from __future__ import annotations

from ..errors import DataError
from ..markup import ANSWER, REASON, wrap
from .formats import record_to_messages

# name -> (hub id, config, default split). Column names are those of the published data sets.
HUB_DATASETS = {
    "openmathinstruct2": ("nvidia/OpenMathInstruct-2", None, "train"),
    "slimorca": ("Open-Orca/SlimOrca", None, "train"),
    "cot_collection": ("kaist-ai/CoT-Collection", None, "train"),
    "gsm8k": ("openai/gsm8k", "main", "train"),
}
_SLIMORCA_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def _hub_name(name: str) -> str:
    key = name.lower().split("/")[-1].replace("-", "").replace("_", "")
    for k in HUB_DATASETS:
        if k.replace("_", "") == key:
            return k
    raise ValueError(f"unknown hub SFT data set {name!r}; known: {sorted(HUB_DATASETS)} "
                     f"({', '.join(v[0] for v in HUB_DATASETS.values())})")


def hub_record_to_messages(name: str, record: dict, where: str = "record") -> list[dict]:
    """Map one row of a hub data set onto messages.

    - OpenMathInstruct-2 (problem, generated_solution, expected_answer): user problem; assistant
      `<reason>solution</reason><answer>expected_answer</answer>`.
    - SlimOrca (conversations: [{from: system|human|gpt, value}]): the conversation.
    - CoT-Collection (source, rationale, target): user source; assistant
      `<reason>rationale</reason><answer>target</answer>`.
    - GSM8K (question, answer): `gsm8k_to_trace` -> `trace_to_messages`.

    Raises DataError naming `where` and the missing column.
    """
    name = _hub_name(name)

    def col(key):
        value = record.get(key)
        if not isinstance(value, str):
            raise DataError(f"{where}: {name} row needs a string column {key!r} (columns: {sorted(record)})")
        return value

    if name == "openmathinstruct2":
        return [{"role": "user", "content": col("problem")},
                {"role": "assistant", "content": wrap(REASON, col('generated_solution'))
                                                 + wrap(ANSWER, col('expected_answer'))}]
    if name == "cot_collection":
        return [{"role": "user", "content": col("source")},
                {"role": "assistant", "content": wrap(REASON, col('rationale')) + wrap(ANSWER, col('target'))}]
    if name == "slimorca":
        conv = record.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise DataError(f"{where}: slimorca row needs a list column 'conversations'")
        msgs = []
        for i, turn in enumerate(conv):
            role = _SLIMORCA_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise DataError(f"{where}: slimorca turn {i} needs from system|human|gpt and a string value")
            msgs.append({"role": role, "content": turn["value"]})
        return msgs
    return record_to_messages(record, "gsm8k", where)


def load_hub_sft(name: str, split: str | None = None, *, limit: int | None = None,
                 data_files=None, **load_kwargs) -> list[list[dict]]:
    """Load a hub SFT data set by name through `datasets` and map it onto messages.

    `name`: "openmathinstruct2" | "slimorca" | "cot_collection" | "gsm8k" (or the hub id).
    `data_files`: read local JSON/JSONL with the same columns instead of the hub (tests, offline).
    `limit`: keep the first rows only (streams, so a 14M-row set is not downloaded whole).

    Raises ValueError for an unknown name, DataError (naming the row) for a bad row.
    """
    import datasets
    key = _hub_name(name)
    hub_id, config, default_split = HUB_DATASETS[key]
    if data_files is not None:
        ds = datasets.load_dataset("json", data_files=data_files, split="train", **load_kwargs)
        source = str(data_files)
    else:
        load_kwargs.setdefault("streaming", limit is not None)
        ds = datasets.load_dataset(hub_id, config, split=split or default_split, **load_kwargs)
        source = hub_id
    out = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        out.append(hub_record_to_messages(key, row, where=f"{source} row {i}"))
    return out

