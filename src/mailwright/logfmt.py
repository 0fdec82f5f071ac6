"""key=value log lines, so an operator can grep and parse them (like Postfix's, but regular)."""

from __future__ import annotations

import logging
import sys


def kv(**fields: object) -> str:
    """Format fields as ``key=value``; values with spaces, quotes or '=' are quoted."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            text = text.replace("\n", "\\n").replace("\r", "\\r")
        parts.append(f"{key}={text}")
    return " ".join(parts)


def setup_logging(level: str) -> None:
    """One handler on stderr: ``time level logger key=value ...``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger("mailwright")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
