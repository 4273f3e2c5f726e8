"""Keep secrets (tokens, keys, passwords from the environment) out of every file and message we write."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(r"(TOKEN|_KEY|KEY_|SECRET|PASSWORD|PASSWD|CREDENTIALS?)", re.IGNORECASE)
_MIN_LENGTH = 6  # shorter values ("1", "true") would redact ordinary text
MASK = "***"


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    values = {value for name, value in env.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first, so a secret containing another is masked whole


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """Return ``value`` with every secret replaced by ``***`` in strings, recursively."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    return value


def redact_json_text(text: str, secrets: list[str] | None = None) -> str:
    """Mask secrets in serialised JSON: each secret is searched in its JSON-escaped spelling."""
    secrets = secret_values() if secrets is None else secrets
    for secret in secrets:
        escaped = json.dumps(secret)[1:-1]
        if escaped in text:
            text = text.replace(escaped, MASK)
    return text
