"""`AgentResult`: what one agent call gives back, and how it shows itself.

`str(result)` is the answer text; in Jupyter the answer renders as Markdown followed by a one-line
footer (agent, model, latency, tokens, cost, cached, and "simulated" when the offline simulator
answered), and the display data carries the same provenance as metadata. A structured answer
(`schema=`) has its fields in `data` (a dict, validated against the schema; `text` is its JSON)
and shows as a JSON block.

Example:
    >>> r = AgentResult(agent="writer", model="claude-sonnet-5-5", text="Hello")
    >>> str(r)
    'Hello'
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .backends.base import Usage

__all__ = ["AgentResult"]


@dataclass(frozen=True)
class AgentResult:
    """The answer of one agent call, with its cost and provenance."""

    agent: str
    model: str
    text: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = math.nan
    latency_ms: float = 0.0
    attempts: int = 1
    stop_reason: str | None = "end_turn"
    cached: bool = False
    backend: str = ""
    request_id: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any] | None = None

    @classmethod
    def make(
        cls,
        agent: str,
        model: str,
        text: str,
        usage: Usage,
        cost_usd: float,
        latency_ms: float,
        attempts: int,
        stop_reason: str | None,
        cached: bool,
        backend: str,
        request_id: str | None,
        started_at: datetime,
        data: dict[str, Any] | None = None,
    ) -> AgentResult:
        """The same as the constructor, in a third of its time: one result is made per call.

        A frozen dataclass sets each field through `object.__setattr__`; this fills the
        instance's dict at once (the values are the caller's, already of the right types).
        """
        result = object.__new__(cls)
        result.__dict__.update(
            agent=agent,
            model=model,
            text=text,
            usage=usage,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            attempts=attempts,
            stop_reason=stop_reason,
            cached=cached,
            backend=backend,
            request_id=request_id,
            started_at=started_at,
            data=data,
        )
        return result

    @property
    def simulated(self) -> bool:
        """True when the offline simulator produced this answer."""
        return self.backend == "simulated"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        preview = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"AgentResult(agent={self.agent!r}, model={self.model!r}, cached={self.cached}, "
            f"latency_ms={self.latency_ms:.1f}, text={preview!r})"
        )

    # -- display ----------------------------------------------------------------------------
    def footer(self) -> str:
        """One line of provenance: agent, model, latency, tokens, cost, cache, backend."""
        cost = "cost n/a" if math.isnan(self.cost_usd) else f"${self.cost_usd:.4f}"
        parts = [
            self.agent,
            self.model,
            f"{self.latency_ms:,.0f} ms",
            f"{self.usage.input_tokens:,} in / {self.usage.output_tokens:,} out tokens",
            cost,
        ]
        if self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.stop_reason == "max_tokens":
            parts.append("truncated at max_tokens")
        if self.cached:
            parts.append("cached")
        if self.simulated:
            parts.append("simulated")
        return " · ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Provenance for display metadata and logs."""
        return {
            "agent": self.agent,
            "model": self.model,
            "backend": self.backend,
            "cached": self.cached,
            "simulated": self.simulated,
        }

    def _repr_markdown_(self) -> str:
        text = self.text if self.data is None else f"```json\n{self.text}\n```"
        # An answer cut off inside a code block would swallow the footer: close the block.
        if text.count("```") % 2:
            text += "\n```"
        return f"{text}\n\n---\n<sub>{html.escape(self.footer())}</sub>"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # The Markdown, plus the provenance as display metadata (IPython adds text/plain).
        return {"text/markdown": self._repr_markdown_()}, {"agentnb": self.metadata()}

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text if cycle else f"{self.text}\n-- {self.footer()}")

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "model": self.model,
            "text": self.text,
            "usage": self.usage.to_dict(),
            "cost_usd": None if math.isnan(self.cost_usd) else self.cost_usd,
            "latency_ms": self.latency_ms,
            "attempts": self.attempts,
            "stop_reason": self.stop_reason,
            "cached": self.cached,
            "backend": self.backend,
            "request_id": self.request_id,
            "started_at": self.started_at.isoformat(),
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentResult:
        cost = data.get("cost_usd")
        return cls(
            agent=data["agent"],
            model=data["model"],
            text=data["text"],
            usage=Usage.from_dict(data.get("usage") or {}),
            cost_usd=math.nan if cost is None else float(cost),
            latency_ms=float(data.get("latency_ms", 0.0)),
            attempts=int(data.get("attempts", 1)),
            stop_reason=data.get("stop_reason"),
            cached=bool(data.get("cached", False)),
            backend=data.get("backend", ""),
            request_id=data.get("request_id"),
            started_at=datetime.fromisoformat(data["started_at"])
            if data.get("started_at")
            else datetime.now(UTC),
            data=data.get("data"),
        )
