"""AgentResult: text, footer, Markdown display and round-trips."""

from __future__ import annotations

import math

from agentnb import AgentResult, Usage


def result(**kw: object) -> AgentResult:
    base: dict[str, object] = {
        "agent": "python-expert",
        "model": "claude-sonnet-5-5",
        "text": "Answer",
        "usage": Usage(10, 20),
        "cost_usd": 0.0012,
        "latency_ms": 210.0,
        "backend": "simulated",
    }
    base.update(kw)
    return AgentResult(**base)  # type: ignore[arg-type]


def test_footer_names_provenance() -> None:
    footer = result(cached=True, attempts=2).footer()
    for part in ("python-expert", "claude-sonnet-5-5", "210 ms", "10 in / 20 out", "$0.0012"):
        assert part in footer
    assert "2 attempts" in footer and "cached" in footer and "simulated" in footer
    assert "cost n/a" in result(cost_usd=math.nan).footer()


def test_truncated_answer_closes_its_code_block_and_says_so() -> None:
    cut = result(text="Here:\n```python\ndef f(x):\n    return", stop_reason="max_tokens")
    md = cut._repr_markdown_()
    body, footer = md.split("\n\n---\n")
    assert body.count("```") == 2  # the open block is closed before the footer
    assert "truncated at max_tokens" in footer
    whole = result(text="Fine:\n```python\nx = 1\n```")
    assert whole._repr_markdown_().count("```") == 2
    assert "truncated" not in whole.footer()


def test_round_trip_and_mimebundle_metadata() -> None:
    r = result(cost_usd=math.nan)
    again = AgentResult.from_dict(r.to_dict())
    assert again.text == r.text and again.usage == r.usage and math.isnan(again.cost_usd)
    data, meta = r._repr_mimebundle_()
    assert "text/markdown" in data
    assert meta["agentnb"] == {
        "agent": "python-expert",
        "model": "claude-sonnet-5-5",
        "backend": "simulated",
        "cached": False,
        "simulated": True,
    }
