"""A fake `google.colab` for tests: put `tests/fake_colab` on PYTHONPATH (or sys.path) and code that
checks for Colab (`havoc_lite.colab.in_colab`, `havoc_lite.secrets`, the notebooks' set-up cell)
runs its Colab branch. `google` stays a namespace package (no google/__init__.py here), so
`google.protobuf` and friends still import.

Environment:
    FAKE_COLAB_DRIVE    folder that plays "My Drive" (drive.mount links <mountpoint>/MyDrive to it)
    FAKE_COLAB_SECRETS  a JSON file {name: value} that userdata.get reads
    FAKE_COLAB_LOG      a file each call appends one line to ("mount <path>", "flush_and_unmount")
"""
import os

from . import drive, userdata  # noqa: F401  (google.colab.drive / .userdata, as in Colab)


def _log(line: str) -> None:
    path = os.environ.get("FAKE_COLAB_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
