"""Signalling protocol v1: parse and validate client messages (schema in schemas/client.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@cache
def _validators() -> dict[str, Draft202012Validator]:
    schema = json.loads(resources.files("signaling").joinpath("schemas/client.json").read_text(
        encoding="utf-8"))
    defs = schema["$defs"]
    out = {}
    for name, message_schema in schema["messages"].items():
        full = {"$defs": defs, **message_schema}
        Draft202012Validator.check_schema(full)
        out[name] = Draft202012Validator(full)
    return out


def message_types() -> list[str]:
    return sorted(_validators())


def parse_client_message(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Decode and validate one frame; ProtocolError with the precise code otherwise."""
    size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError("message_too_large",
                            f"message of {size} bytes exceeds the limit of {max_bytes}")
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProtocolError("bad_json", "JSON nested too deeply") from exc
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    ref = message.get("id") if isinstance(message.get("id"), str) else None
    if "\\u" in raw if isinstance(raw, str) else b"\\u" in raw:
        _check_escaped_text(message, ref)  # only \u escapes bring these in: checked only then
    kind = message.get("type")
    validator = _validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; known: "
                            f"{', '.join(message_types())}", ref)
    error = next(iter(sorted(validator.iter_errors(message), key=lambda e: e.path)), None)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(message)"
        raise ProtocolError("bad_message", f"{kind}: {where}: {error.message}", ref)
    return message


def _check_escaped_text(message: dict[str, Any], ref: str | None) -> None:
    """Every string in the message is text a database and the other clients can take: no lone
    UTF-16 surrogate (``\\ud800`` decodes to one, and it has no UTF-8 form) and no NUL
    (PostgreSQL refuses it in text)."""
    stack: list[tuple[str, Any]] = [("", message)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, key))
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", item) for i, item in enumerate(value))
        elif isinstance(value, str):
            # the path itself may hold what is looked for: shown escaped
            where = (where or "a key").encode("utf-8", "backslashreplace").decode("utf-8")
            where = where.replace("\x00", "\\u0000")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ProtocolError("bad_json", f"not JSON text: {where} holds a "
                                    f"lone surrogate ({exc.reason}); send UTF-8 text",
                                    ref) from exc
            if "\x00" in value:
                raise ProtocolError("bad_message", f"{where}: NUL characters "
                                    "(\\u0000) are not allowed in text", ref)
