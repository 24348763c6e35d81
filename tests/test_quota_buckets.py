"""The quota's arithmetic (`agentnb.quota.buckets`), its headers, and the adaptive window."""

from __future__ import annotations

import asyncio
import math

import pytest

from agentnb.quota import (
    Buckets,
    Level,
    Limits,
    RateLimits,
    model_class,
    parse_rate_limits,
    rate_limit_headers,
)
from agentnb.quota.limiter import AdaptiveLimit


def test_a_bucket_refills_continuously_not_at_the_top_of_the_minute() -> None:
    b = Buckets(Limits(rpm=60), now=0.0)  # one a second, a burst of one
    assert b.take((1, 0, 0), 0.0) == 0.0
    assert b.take((1, 0, 0), 0.0) == pytest.approx(1.0)
    assert b.take((1, 0, 0), 0.5) == pytest.approx(0.5)
    taken = sum(b.take((1, 0, 0), 1.0 + t) == 0.0 for t in range(59))
    assert taken == 59  # one per second for the rest of the minute, never 60 at once


def test_a_burst_holds_burst_s_seconds_worth() -> None:
    b = Buckets(Limits(rpm=600, burst_s=2.0), now=0.0)  # 10 a second, 20 at once
    assert sum(b.take((1, 0, 0), 0.0) == 0.0 for _ in range(25)) == 20


def test_a_cost_bigger_than_the_burst_goes_when_full_and_leaves_a_debt() -> None:
    b = Buckets(Limits(otpm=600), now=0.0)  # 10 tokens a second, a burst of 10
    assert b.take((1, 0, 100), 0.0) == 0.0  # full: it goes, the level is now -90
    assert b.levels[2] == pytest.approx(-90)
    assert b.take((1, 0, 5), 0.0) == pytest.approx(9.5)  # the debt is paid back first


def test_give_back_and_lower_to_and_pause() -> None:
    b = Buckets(Limits(rpm=60, itpm=6000, otpm=600), now=0.0)
    b.take((1, 50, 10), 0.0)
    b.give((0, 30, 5), 0.0)
    assert b.levels[1:] == [pytest.approx(80), pytest.approx(5)]
    b.give((0, 1000, 0), 0.0)
    assert b.levels[1] == pytest.approx(100)  # never above the capacity
    b.lower_to((None, 20.0, None), 0.0)
    assert b.levels[1] == pytest.approx(20)
    b.lower_to((None, 50.0, None), 0.0)
    assert b.levels[1] == pytest.approx(20)  # never raised by the server's word
    b.pause(5.0)
    assert b.wait_for((0, 0, 0), 1.0) == pytest.approx(4.0)


def test_new_limits_keep_the_levels_share() -> None:
    b = Buckets(Limits(rpm=60), now=0.0)
    b.set_limits(Limits(rpm=120, itpm=6000), now=0.0)
    assert b.levels[0] == pytest.approx(2.0) and b.levels[1] == pytest.approx(100)
    assert math.isinf(b.levels[2])


def test_headers_round_trip_and_the_tokens_header_is_the_most_restrictive() -> None:
    rl = RateLimits(Level(3000, 49, 0.02), Level(400000, 6000, 0.1), Level(8000, 10, 1.5), 1e9)
    h = rate_limit_headers(rl)
    assert h["anthropic-ratelimit-tokens-limit"] == "8000"
    assert h["anthropic-ratelimit-output-tokens-reset"].endswith("Z")
    back = parse_rate_limits(h, now=1e9)
    assert back is not None
    assert back.requests is not None and back.requests[:2] == (3000, 49)
    assert back.requests.reset_s == pytest.approx(0.02, abs=1e-3)
    assert back.output_tokens is not None and back.output_tokens.remaining == 10
    assert parse_rate_limits({"request-id": "x"}) is None
    assert parse_rate_limits({"anthropic-ratelimit-requests-limit": "many"}) is None


@pytest.mark.parametrize(
    ("model", "cls"),
    [
        ("claude-sonnet-5-5", "sonnet"),
        ("claude-opus-4-8", "opus"),
        ("claude-3-5-haiku-20241022", "haiku"),
        ("gpt-x", "gpt-x"),
    ],
)
def test_model_class(model: str, cls: str) -> None:
    assert model_class(model) == cls


def test_the_window_slow_starts_then_halves_once_per_congestion_event() -> None:
    w = AdaptiveLimit(ceiling=16, start=2)
    for _ in range(6):
        w.grow()
    assert w.limit == 8  # one more per success while slow-starting
    w.cut(sent_at=-1.0)  # sent before any cut
    assert w.limit == 4
    w.cut(sent_at=-1.0)  # the same congestion event: no second cut
    assert w.limit == 4
    for _ in range(4):
        w.grow()
    assert w.limit == 4  # additive now: a quarter of a call per success at a window of 4
    w.grow()
    assert w.limit == 5
    assert [why for _, _, why in w.history][:2] == ["start", "increase"]


def test_a_bigger_window_lets_waiters_in_at_once() -> None:
    async def main() -> int:
        w = AdaptiveLimit(ceiling=4, start=1)
        await w.acquire()
        waiting = [asyncio.ensure_future(w.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        w.grow()  # limit 2: one waiter goes without anyone releasing
        await asyncio.sleep(0)
        done = sum(t.done() for t in waiting)
        for t in waiting:
            t.cancel()
        return done

    assert asyncio.run(main()) == 1
