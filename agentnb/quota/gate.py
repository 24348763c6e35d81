"""Which quota an attempt counts against: the orchestrator's registry of `QuotaLimiter`s.

`Quotas.wrap(slot, call, state)` puts a call's attempt behind the limiter of its quota (the
backend's `quota_scope` and the model's class) or returns the slot unchanged when there is no
quota to pace to: rate limiting off, no `rate_limits:` for the class and a backend that never
sends rate-limit headers (the simulator without `sim_limits`), or a server whose first answer
carried none. That lean path costs one dict lookup per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .buckets import Limits
from .headers import model_class
from .limiter import QuotaLimiter, QuotaSlot

if TYPE_CHECKING:
    import pandas as pd

    from ..backends import Backend
    from ..config import Config
    from ..orchestrator.prepare import PreparedCall
    from ..orchestrator.records import CallState
    from .stores import BucketStore

__all__ = ["LOCAL_SCOPE", "Quotas"]

#: The most a quota's adaptive window grows to. Each job's own `max_concurrency` (and the
#: orchestrator's) still caps its calls in flight: the window only ever lowers that, after
#: 429s and 529s, and while it slow-starts. One quota serves every job of the orchestrator.
WINDOW_CEILING = 10_000
#: A backend's `quota_scope` starting with this is a quota of this process alone.
LOCAL_SCOPE = "local:"


class Quotas:
    """The quotas of one orchestrator, made as models are first called."""

    def __init__(self, config: Config, backend: Callable[[], Backend]) -> None:
        self.config = config
        self._backend = backend
        self._store: BucketStore | None = None
        self._local: BucketStore | None = None
        self._by_model: dict[str, QuotaLimiter | None] = {}
        self.limiters: dict[str, QuotaLimiter] = {}
        self._last_look: tuple[float, dict[str, int]] = (time.monotonic(), {})
        self._use = ""

    def wrap(self, slot: Any, call: PreparedCall, state: CallState | None) -> Any:
        """`slot`, behind the quota of `call`'s model when it has one."""
        model = call.request.model
        try:
            limiter = self._by_model[model]
        except KeyError:
            limiter = self._by_model[model] = self._limiter_for(model)
        if limiter is None or limiter.state == "none":
            return slot
        return QuotaSlot(slot, limiter, call, state)

    def _limiter_for(self, model: str) -> QuotaLimiter | None:
        backend = self._backend()
        cls = model_class(model)
        rates = self.config.rate_limits
        entry = rates.get(cls, rates.get("*"))
        limits = Limits.from_mapping(entry) if entry else None
        learn = backend.reports_rate_limits
        if limits is None and not learn:
            return None
        scope = backend.quota_scope
        key = f"{scope}|{cls}"
        limiter = self.limiters.get(key)
        if limiter is None:
            # A "local:" scope is a quota no other process can share (an in-process simulator).
            local = scope.startswith(LOCAL_SCOPE)
            limiter = self.limiters[key] = QuotaLimiter(
                key,
                self._local_store if local else lambda: self.store,
                limits=limits,
                learn=learn,
                ceiling=WINDOW_CEILING,
                adaptive=self.config.adaptive_concurrency,
            )
        return limiter

    def _local_store(self) -> BucketStore:
        from .stores import LocalStore

        if self._local is None:
            self._local = LocalStore()
        return self._local

    @property
    def store(self) -> BucketStore:
        """Where the buckets live (`ratelimit_backend`), made on first need."""
        if self._store is None:
            from .stores import make_store

            self._store = make_store(self.config)
        return self._store

    def live(self) -> dict[str, int | float | str]:
        """What a progress display shows of the quotas: attempts queued for them, attempts
        sent and not answered, and the busiest quota's use of its requests per minute since
        the last look. Empty while no quota paces anything."""
        active = [lim for lim in self.limiters.values() if lim.state != "none"]
        if not active:
            return {}
        now = time.monotonic()
        out: dict[str, int | float | str] = {
            "queued": sum(lim.queued for lim in active),
            "sending": sum(lim.in_flight for lim in active),
        }
        then, counts = self._last_look
        if now - then >= 0.5:
            uses = []
            for lim in active:
                rpm = lim.limits.rpm if lim.limits is not None else None
                before = counts.get(lim.key)
                if rpm and before is not None:
                    uses.append(((lim.admitted - before) * 60 / (now - then) / rpm, rpm))
            if uses:
                use, rpm = max(uses)
                self._use = f"{use:.0%} of {rpm:g} rpm"
            self._last_look = (now, {lim.key: lim.admitted for lim in active})
        if self._use:
            out["quota"] = self._use
        return out

    def table(self) -> pd.DataFrame:
        """One row per quota met so far: its limits, calls, 429s, waits and window."""
        import pandas as pd

        return pd.DataFrame([lim.describe() for lim in self.limiters.values()])

    def history(self) -> pd.DataFrame:
        """Every change of each quota's concurrency window: time, quota, limit, why."""
        import pandas as pd

        rows = [
            (pd.Timestamp(t, unit="s", tz="UTC"), key, limit, why)
            for key, lim in self.limiters.items()
            if lim.window is not None
            for t, limit, why in lim.window.history
        ]
        return pd.DataFrame(rows, columns=["time", "quota", "concurrency", "why"])

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()
