"""Cache keys: the SHA-256 of everything that changes an answer.

A key is the full SHA-256 hex digest of the canonical JSON (sorted keys, no whitespace, ASCII
escapes) of the backend kind, agent name, a hash of the agent's system prompt, model id, system
prompt, messages, max_tokens and temperature. Change any of them and the key changes, so an edited
agent file, another model or a simulated answer never answers a different request.

Example:
    >>> k = make_key(backend="simulated", agent="writer", prompt_hash=prompt_hash("You write."),
    ...              model="claude-sonnet-5-5", system="You write.",
    ...              messages=[{"role": "user", "content": "Hi"}], max_tokens=1024,
    ...              temperature=None)
    >>> len(k)
    64
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["KEY_VERSION", "canonical_json", "key_document", "make_key", "prompt_hash"]

#: Bumped when the key layout changes, so old entries simply stop matching.
KEY_VERSION = 1

_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode


def canonical_json(obj: Any) -> bytes:
    """The one JSON spelling of `obj`: sorted keys, no whitespace, ASCII only, no NaN."""
    return _encode(obj).encode("ascii")


def prompt_hash(text: str) -> str:
    """SHA-256 hex of an agent's prompt (or whole file), for `make_key(prompt_hash=...)`."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def key_document(
    *,
    backend: str,
    agent: str,
    prompt_hash: str,
    model: str,
    system: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float | None,
) -> dict[str, Any]:
    """The document a key hashes (its canonical JSON is what `make_key` digests)."""
    return {
        "v": KEY_VERSION,
        "backend": backend,
        "agent": agent,
        "prompt_hash": prompt_hash,
        "model": model,
        "system": system,
        "messages": messages,
        "max_tokens": int(max_tokens),
        "temperature": None if temperature is None else float(temperature),
    }


def make_key(
    *,
    backend: str,
    agent: str,
    prompt_hash: str,
    model: str,
    system: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float | None,
) -> str:
    """The cache key of one request: full SHA-256 hex of `canonical_json(key_document(...))`.

    `temperature` 1 and 1.0 give the same key (it is normalised to a float). The JSON is
    spelled out field by field rather than through the generic encoder: the same bytes (a test
    checks it against `canonical_json`) in about half the time, because a memory-tier hit,
    key included, should cost under 10 µs; the JSON of an agent's fixed fields is remembered.
    """
    if temperature is None:
        temp = b'null,"v":%d}' % KEY_VERSION
    else:
        number = float(temperature)
        if not math.isfinite(number):
            raise ValueError(f"temperature must be a finite number, got {temperature!r}")
        temp = b'%s,"v":%d}' % (float.__repr__(number).encode("ascii"), KEY_VERSION)
    head, tail = _fixed_parts(agent, backend, model, prompt_hash, system)
    # Keys in sorted order, as `canonical_json` writes them; fed to the hash piece by piece.
    h = hashlib.sha256(head)
    h.update(b'%d,"messages":[' % int(max_tokens))
    first = True
    for m in messages:
        if not first:
            h.update(b",")
        first = False
        if type(m) is dict and len(m) == 2:
            content, role = m.get("content"), m.get("role")
            if type(content) is str and type(role) is str:
                h.update(b'{"content":')
                h.update(_str(content).encode("ascii"))
                h.update(b',"role":')
                h.update(_str(role).encode("ascii"))
                h.update(b"}")
                continue
        h.update(_encode(m).encode("ascii"))
    h.update(tail)
    h.update(temp)
    return h.hexdigest()


_str: Callable[[str], str] = (
    json.encoder.c_encode_basestring_ascii or json.encoder.py_encode_basestring_ascii  # type: ignore[attr-defined]
)

#: The JSON of the fields an agent keeps from call to call (its system prompt can be long):
#: (agent, backend, model, prompt_hash, system) -> (text before max_tokens, text after messages).
_fixed: dict[tuple[str, str, str, str, str], tuple[bytes, bytes]] = {}
_FIXED_MAX = 256


def _fixed_parts(
    agent: str, backend: str, model: str, prompt_hash: str, system: str
) -> tuple[bytes, bytes]:
    k = (agent, backend, model, prompt_hash, system)
    parts = _fixed.get(k)
    if parts is None:
        if len(_fixed) >= _FIXED_MAX:
            _fixed.clear()
        head = f'{{"agent":{_str(agent)},"backend":{_str(backend)},"max_tokens":'
        tail = (
            f'],"model":{_str(model)},"prompt_hash":{_str(prompt_hash)},'
            f'"system":{_str(system)},"temperature":'
        )
        parts = _fixed[k] = (head.encode("ascii"), tail.encode("ascii"))
    return parts
