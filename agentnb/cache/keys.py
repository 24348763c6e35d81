"""Cache keys: the SHA-256 of everything that changes an answer.

A key is the full SHA-256 hex digest of the canonical JSON (`orjson`, sorted keys, no
whitespace, UTF-8) of a document with two parts: `agent` (backend identity, agent name, a hash
of the agent's prompt, model, system prompt) and `request` (messages, max_tokens, temperature,
stop sequences; and, only when set, so other keys are unchanged: the shared `prefix` of the
first user turn, the `schema` digest of a structured answer, the `sample` index), plus the
layout version `v`. Change any of them and the key changes, so an edited agent file, another
model or a simulated answer never answers a different request.
Options that do not change the answer (timeout, attempts, cache policy) are not in it.

The `agent` part comes first in the canonical spelling, so the hash state after it is kept per
agent (bounded) and only the request part is hashed per call; a test checks the key against the
plain `sha256(canonical_json(key_document(...)))`.

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
import math
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["KEY_VERSION", "canonical_json", "key_document", "make_key", "prompt_hash"]

#: Bumped when the key layout changes, so old entries simply stop matching.
KEY_VERSION = 2

_SORTED = orjson.OPT_SORT_KEYS


def canonical_json(obj: Any) -> bytes:
    """The one JSON spelling of `obj`: sorted keys, no whitespace, UTF-8; NaN is refused."""
    no_nan(obj)
    return orjson.dumps(obj, option=_SORTED)


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
    stop_sequences: Sequence[str] = (),
    prefix: str = "",
    schema: str | None = None,
    sample: int = 0,
) -> dict[str, Any]:
    """The document a key hashes (its canonical JSON is what `make_key` digests)."""
    document: dict[str, Any] = {
        "agent": {
            "backend": backend,
            "model": model,
            "name": agent,
            "prompt_hash": prompt_hash,
            "system": system,
        },
        "request": {
            "max_tokens": int(max_tokens),
            "messages": messages,
            "stop_sequences": list(stop_sequences),
            "temperature": None if temperature is None else float(temperature),
        },
        "v": KEY_VERSION,
    }
    document["request"].update(_extras(prefix, schema, sample))
    return document


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
    stop_sequences: Sequence[str] = (),
    prefix: str = "",
    schema: str | None = None,
    sample: int = 0,
) -> str:
    """The cache key of one request: full SHA-256 hex of `canonical_json(key_document(...))`.

    `temperature` 1 and 1.0 give the same key (it is normalised to a float). Values must be
    checked before (`CallOptions` does): NaN and lone surrogates are refused here. `schema` is
    the `AnswerSchema.digest` of a structured answer (the SHA-256 of its canonical JSON).
    """
    if temperature is not None:
        temperature = float(temperature)
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number, got {temperature!r}")
    h = _agent_state(backend, model, agent, prompt_hash, system).copy()
    request: dict[str, Any] = {
        "max_tokens": int(max_tokens),
        "messages": messages,
        "stop_sequences": list(stop_sequences),
        "temperature": temperature,
    }
    if prefix or schema is not None or sample:
        request.update(_extras(prefix, schema, sample))
    h.update(orjson.dumps(request, option=_SORTED))
    h.update(_TAIL)
    digest: str = h.hexdigest()
    return digest


def _extras(prefix: str, schema: str | None, sample: int) -> dict[str, Any]:
    """The request's parts that are in its key only when set (older keys stay as they were)."""
    extras: dict[str, Any] = {}
    if prefix:
        extras["prefix"] = prefix
    if schema is not None:
        extras["schema"] = schema
    if sample:
        extras["sample"] = int(sample)
    return extras


_TAIL = b',"v":%d}' % KEY_VERSION
#: (backend, model, agent, prompt_hash, system) -> hash state after `{"agent":{...},"request":`.
_states: dict[tuple[str, str, str, str, str], Any] = {}
_STATES_MAX = 256


def _agent_state(backend: str, model: str, agent: str, prompt_hash: str, system: str) -> Any:
    k = (backend, model, agent, prompt_hash, system)
    state = _states.get(k)
    if state is None:
        if len(_states) >= _STATES_MAX:
            _states.clear()
        head = orjson.dumps(
            {
                "backend": backend,
                "model": model,
                "name": agent,
                "prompt_hash": prompt_hash,
                "system": system,
            },
            option=_SORTED,
        )
        state = _states[k] = hashlib.sha256(b'{"agent":' + head + b',"request":')
    return state


def no_nan(obj: Any) -> None:
    """Raise ValueError for a NaN or infinity anywhere in `obj` (orjson would write null)."""
    if type(obj) is float:
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} has no JSON spelling")
        return
    if isinstance(obj, dict):
        values: Any = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return
    for v in values:
        if type(v) not in _LEAVES:  # most values: no call to look at them (every answer cached)
            no_nan(v)


#: Types `no_nan` has nothing to look into (exact types: any other, a subclass too, is looked at).
_LEAVES = frozenset((str, int, bool, type(None)))
