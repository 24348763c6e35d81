"""What the response cache stores for an answer: a `BackendResponse` as plain JSON values.

A structured answer's `data` is not stored beside its text, which is its JSON: the payload says
`structured` and the fields are parsed from the text when read (so each reader gets its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..backends import BackendResponse, Usage

__all__ = ["from_payload", "to_payload"]


def to_payload(resp: BackendResponse) -> dict[str, Any]:
    """The cache payload of a response."""
    u = resp.usage
    payload: dict[str, Any] = {
        "text": resp.text,
        "model": resp.model,
        "stop_reason": resp.stop_reason,
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "backend": resp.backend,
        "request_id": resp.request_id,
        "stop_sequence": resp.stop_sequence,
    }
    if resp.data is not None:
        payload["structured"] = True
    return payload


def from_payload(payload: Mapping[str, Any]) -> BackendResponse:
    """The response a cache payload holds."""
    u = payload.get("usage") or {}
    return BackendResponse(
        payload["text"],
        payload["model"],
        payload.get("stop_reason"),
        Usage(
            int(u.get("input_tokens", 0) or 0),
            int(u.get("output_tokens", 0) or 0),
            int(u.get("cache_read_tokens", 0) or 0),
            int(u.get("cache_write_tokens", 0) or 0),
        ),
        payload.get("backend") or "",
        payload.get("request_id"),
        payload.get("stop_sequence"),
        None,
        orjson.loads(payload["text"]) if payload.get("structured") else None,
    )
