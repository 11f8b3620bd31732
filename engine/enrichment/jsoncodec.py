"""JSON for the hot path: orjson where it is installed, the standard library otherwise.

At thousands of records a second every record is decoded once (input), encoded once
(request body) and its answer decoded once: with the standard library that is about 15 µs
a record, a tenth of what one aiohttp request costs; orjson does the same in about 2 µs.

orjson reads an integer of more than 64 bits as a float, where the standard library keeps
it exact: text holding a run of 19 or more digits is decoded by the standard library, so
no value changes whichever library is installed. Encoding falls back the same way (orjson
refuses such integers, and dict keys that are not strings).
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the lock installs it
    orjson = None

# every digit → "9", then a search for 19 nines: a third of a regular expression's cost
_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_RUN = b"9" * 19
_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
DecodeError = json.JSONDecodeError  # orjson's JSONDecodeError subclasses it


def loads(data: bytes) -> Any:
    if orjson is not None and _LONG_RUN not in data.translate(_NINES):
        return orjson.loads(data)
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; values JSON has no type for (dates, decimals) as their str()."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str)
        except (TypeError, orjson.JSONEncodeError):
            pass  # an integer beyond 64 bits, a key that is not a string: the slow path
    return _std_dumps(value).encode()


def dumps_text(value: Any) -> str:
    return dumps(value).decode()


def error_position(data: bytes) -> tuple[str, int]:
    """The standard library's message and column for text that does not decode (errors
    only: both libraries agree on what is invalid, and its messages are the familiar ones)."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return exc.msg, exc.colno
    except UnicodeDecodeError as exc:
        return f"not UTF-8 ({exc.reason})", exc.start + 1
    return "invalid JSON", 1
