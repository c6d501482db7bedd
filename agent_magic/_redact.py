"""Secrets never reach disk: names that look secret, their values in the environment, redaction."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

_SECRET_NAME = re.compile(
    r"""(
        (API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|TOKEN|PASSW(OR)?D|CREDENTIALS?)$  # OPENAI_API_KEY, HF_TOKEN, DB_PASSWORD
      | SECRET                                                               # AWS_SECRET_ACCESS_KEY, CLIENT_SECRET
      | ^ANTHROPIC_.*KEY                                                     # ANTHROPIC_API_KEY, ANTHROPIC_AUTH_KEY
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def is_secret_name(name: str) -> bool:
    """True for environment variable names that hold secrets (``*_API_KEY``, ``*_TOKEN``, ``*SECRET*``, ...).

    The one definition used both to redact stored text and to strip the
    environment of the agent's subprocesses.
    """
    return bool(_SECRET_NAME.search(name))


_SECRET_NAMES: tuple[int, float, tuple[str, ...]] = (-1, 0.0, ())


def secret_values(environ: Any = None) -> dict[str, str]:
    """Secret values in the environment (8+ characters), by variable name.

    For ``os.environ`` the matching *names* are cached (rescanned when the
    environment's size changes, and every 2 seconds) because this runs for every
    stored line; the *values* are always read fresh.
    """
    global _SECRET_NAMES
    if environ is not None:
        return {k: v for k, v in environ.items() if len(v) >= 8 and is_secret_name(k)}
    size, when, names = _SECRET_NAMES
    now = time.monotonic()
    if size != len(os.environ) or now - when > 2.0:
        names = tuple(k for k in os.environ if is_secret_name(k))
        _SECRET_NAMES = (len(os.environ), now, names)
    out = {}
    for k in names:
        v = os.environ.get(k)
        if v is not None and len(v) >= 8:
            out[k] = v
    return out


def redact(text: str, secrets: dict[str, str] | None = None) -> str:
    """Replace any secret value from the environment in ``text`` by ``[REDACTED:NAME]``."""
    for name, value in (secret_values() if secrets is None else secrets).items():
        if value in text:
            text = text.replace(value, f"[REDACTED:{name}]")
    return text


class RedactSecrets(logging.Filter):
    """A logging filter that replaces the environment's secret values in a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = secret_values()
        if not found:
            return True
        message = record.getMessage()
        clean = redact(message, found)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, found)
        return True


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) masked, for messages."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port, say: mask everything between // and @
        return re.sub(r"//[^/@]*@", "//***@", url)
    netloc = parts.netloc
    if password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = parts.query
    if "password" in query.lower():
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{urllib.parse.quote(k)}={'***' if k.lower() == 'password' else urllib.parse.quote(v)}" for k, v in pairs
        )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def without_url_secrets(text: str, url: str) -> str:
    """``text`` (an error message) with ``url``'s password replaced by its masked form wherever it appears."""
    masked = redact_url(url)
    text = text.replace(url, masked)
    try:
        import urllib.parse

        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text
