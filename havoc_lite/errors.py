"""The kit's error vocabulary, and the one wrapper every command line uses to report it.

A user's mistake (a bad flag, a missing or corrupt file, data the loader cannot use, a checkpoint
that does not belong to this run, a full disk) is printed as ONE line, `error: <what and where>`,
and the command exits with status 2. A bug keeps its traceback. Set `HAVOC_LITE_TRACEBACK=1` to get
the traceback for a user error too.

    from havoc_lite.errors import ConfigError, run_cli
    def main(argv=None) -> int: ...
    if __name__ == "__main__":
        sys.exit(run_cli(main))
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable, Optional

EXIT_USER_ERROR = 2
TRACEBACK_ENV = "HAVOC_LITE_TRACEBACK"


class HavocError(Exception):
    """Base of the user-facing errors: the message is one line naming the file, line or field."""


class ConfigError(HavocError, ValueError):
    """A flag or config field with a value outside its range (names the field)."""


class DataError(HavocError, ValueError):
    """Bad input data (names the file and 1-based line)."""


class ResumeError(HavocError, ValueError):
    """A checkpoint that cannot be resumed by this run (another model config or tokenizer, or
    every checkpoint corrupt)."""


# Operating-system errors that are about the user's files or machine, never about our code.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST}

_USER_OSERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError,
                  FileExistsError)


def user_error_message(exc: BaseException) -> Optional[str]:
    """The one-line message for a user error, or None when `exc` looks like a bug.

    User errors: `HavocError` (and its subclasses, `checkpoint.CheckpointError` included), an
    `OSError` about the user's files or disk (missing file, no permission, disk full, read-only
    file system), and `ValueError`, which the kit's functions document for bad arguments. Anything
    else (TypeError, AttributeError, RuntimeError, ...) is a bug and keeps its traceback.
    """
    if isinstance(exc, HavocError):
        msg = str(exc)
    elif isinstance(exc, _USER_OSERRORS) and exc.errno is None:   # raised by us with a message
        msg = str(exc)
    elif isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        what = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system"}.get(exc.errno)
        where = f"{exc.filename}: " if exc.filename else ""
        msg = f"{where}{what or exc.strerror or exc}" if exc.strerror or what else str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            msg += " (checkpoints saved before this point are intact; free space and resume)"
    elif isinstance(exc, ValueError):
        msg = str(exc)
    else:
        return None
    return " ".join(msg.split()) or type(exc).__name__


def run_cli(main: Callable[..., Any], argv: Optional[list[str]] = None, *, prog: str = "") -> int:
    """Call `main(argv)` and turn a user error into `error: <one line>` on stderr and exit 2.

    Returns main's own exit code (anything but an int, e.g. None or a results dict, counts as 0). KeyboardInterrupt gives 130. A bug
    (see `user_error_message`) is re-raised with its traceback. `argparse`'s own exit for a bad
    flag (SystemExit 2) passes through unchanged.
    """
    try:
        rc = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg = user_error_message(e)
        if msg is None or os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prog + ' ' if prog else ''}error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
