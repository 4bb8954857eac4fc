"""Fake `google.colab.userdata`: `get(key)` reads the JSON dict in $FAKE_COLAB_SECRETS and raises
`SecretNotFoundError` for a missing key, as Colab does."""
import json
import os


class SecretNotFoundError(Exception):
    pass


class NotebookAccessError(Exception):
    pass


def get(key: str) -> str:
    path = os.environ.get("FAKE_COLAB_SECRETS")
    secrets = json.load(open(path, encoding="utf-8")) if path and os.path.isfile(path) else {}
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
