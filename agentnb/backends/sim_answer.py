"""The simulator's answers: everything about one answer that depends only on the request.

`plan_answer(seed, request)` is the one place that computes it: the text, why it stopped, the
token counts, and a 64-bit digest the latency jitter and random faults are drawn from. The same
request always gets the same plan, whatever the order or concurrency of calls.

It is cheap by construction, because benchmarks send a fresh task on every call and must measure
agentnb, not this test double (no answer cache flatters them: a whole `create()` costs ~7 µs of
CPU for a short task, ~11 µs for a 4 KB one, and no more for longer ones):
- everything that depends only on (seed, model, agent, system prompt) is a `Voice`, made once and
  kept in a bounded cache: the flavour of answer, its templates, the code sketch, a hash key;
- the task is hashed with crc32 over at most its first and last 2 KB plus its length (two tasks
  of more than 4 KB that differ only in the middle get the same answer), and its keywords are
  read from its first 200 characters;
- the text is one %-format of a template the voice made beforehand.

`compose(request, voice, digest)` writes the text. A structured call (`request.schema`) is
answered with data instead (`sim_structured.fill`, made of the first user turn's keywords), its
text the data's JSON; a share `invalid_rate` of them (drawn from the digest) break the schema
(`sim_structured.broken`). A request's shared `prefix` and its `sample` index change the digest,
so a new sample is a new answer.

Example:
    >>> from agentnb.backends import BackendRequest
    >>> plan = plan_answer(0, BackendRequest(model="m", task="Sort a list", agent="writer"))
    >>> plan.text.startswith(SIMULATED_NOTE), plan.stop_reason
    (True, 'end_turn')
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..schema import AnswerSchema, answer_text
from .base import BackendRequest, Message

__all__ = ["SIMULATED_NOTE", "AnswerPlan", "Voice", "compose", "plan_answer", "voice_for"]

#: The first line of every simulated answer.
SIMULATED_NOTE = "> *Simulated answer (agentnb offline simulator, no API call was made).*"

_MASK64 = 0xFFFFFFFFFFFFFFFF
_HASHED_CHARS = 2048  # of a long text's head, and as many of its tail
_KEYWORD_SPAN = 200  # keywords come from the task's first characters only
_MAX_WORDS = 4
_LAYOUTS = 16  # bullet orders per voice; the digest's top four bits pick one
_MAX_CHUNKS = 8
_INVALID_SALT = 0x5DEECE66D  # draws "is this structured answer invalid" apart from the others


class AnswerPlan(NamedTuple):
    """Everything about an answer that depends only on the request.

    `system_tokens` count the system prompt and a structured call's tool schema (what caching
    the system prompt covers), `prefix_tokens` the shared prefix, `message_tokens` the turns
    without it; `input_tokens` all of them. `data` is a structured answer's fields.
    """

    text: str
    stop_reason: str
    stop_sequence: str | None
    digest: int
    jitter_u: float  # in [0, 1): where the latency falls within its jitter
    input_tokens: int
    system_tokens: int
    message_tokens: int
    output_tokens: int
    data: dict[str, Any] | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Voice:
    """How one (seed, model, agent, system prompt) answers; made once, shared by its calls.

    `templates` are the whole answer as %-format strings, one per order of bullets, each with
    its number of bullets: they take the topic, one keyword per bullet, the code sketch's name
    twice (when `writes_code`) and the answer's number.
    """

    key: int  # a 64-bit hash of seed, model, agent and system prompt
    flavor: str  # "review", "writer" or "general"
    writes_code: bool
    templates: tuple[tuple[int, str], ...]


def plan_answer(seed: int, request: BackendRequest, invalid_rate: float = 0.0) -> AnswerPlan:
    """The answer the simulator gives `request`: text, stop reason, token counts and digest.

    `invalid_rate`: the share of structured answers that break their schema (1: every one).
    """
    voice = voice_for(seed, request.model, request.agent, request.system)
    task, history = request.task, request.history
    digest = _digest(voice.key, task, history)
    if request.schema is not None or request.prefix or request.sample:
        return _plan_more(request, voice, digest, invalid_rate)
    text, stop_reason, stop_sequence = _cut(compose(request, voice, digest), request)
    msg_chars = len(task) + sum(len(m.content) for m in history) if history else len(task)
    system_chars = len(request.system)
    return AnswerPlan(
        text,
        stop_reason,
        stop_sequence,
        digest,
        ((digest >> 28) & 0xFFFFFFFF) / 4294967296.0,
        (system_chars + msg_chars + 3) // 4 or 1,  # ~4 characters a token, at least one
        (system_chars + 3) // 4,
        (msg_chars + 3) // 4 or 1,
        (len(text) + 3) // 4 or 1,
    )


def _plan_more(
    request: BackendRequest, voice: Voice, digest: int, invalid_rate: float
) -> AnswerPlan:
    """`plan_answer` for a request with a schema, a shared prefix or a sample index (apart, so
    that the plain path pays nothing for them)."""
    prefix, schema, history = request.prefix, request.schema, request.history
    if prefix or request.sample:
        digest = _varied(digest, prefix, request.sample)
    system_chars = len(request.system)
    data = None
    if schema is None:
        text, stop_reason, stop_sequence = _cut(compose(request, voice, digest), request)
    else:
        text, data, stop_reason = _structured(request, schema, digest, invalid_rate)
        stop_sequence = None
        system_chars += schema.chars  # the tool's definition counts as input
    msg_chars = len(request.task) + sum(len(m.content) for m in history)
    return AnswerPlan(
        text,
        stop_reason,
        stop_sequence,
        digest,
        ((digest >> 28) & 0xFFFFFFFF) / 4294967296.0,
        (system_chars + len(prefix) + msg_chars + 3) // 4 or 1,
        (system_chars + 3) // 4,
        (msg_chars + 3) // 4 or 1,
        (len(text) + 3) // 4 or 1,
        data,
        (len(prefix) + 3) // 4,
    )


def _structured(
    request: BackendRequest, schema: AnswerSchema, digest: int, invalid_rate: float
) -> tuple[str, dict[str, Any] | None, str]:
    """A structured answer: its text (the data's JSON), its data and why it stopped."""
    from .sim_structured import broken, fill  # it imports this module

    first = request.history[0].content if request.history else request.task
    data = fill(schema, _keywords(first) or _NO_WORDS, digest)
    if invalid_rate and mix(digest ^ _INVALID_SALT) < invalid_rate * 2.0**64:
        data = broken(schema, data)
    text = answer_text(data)
    budget = request.max_tokens * 4
    if len(text) > budget:  # the tool's input, cut off: no data
        return text[:budget], None, "max_tokens"
    return text, data, "tool_use"


def _varied(digest: int, prefix: str, sample: int) -> int:
    """The digest of a request with a shared prefix and/or a sample index."""
    if prefix:
        digest ^= zlib.crc32(_bounded(prefix)) << 32
    return mix(digest + sample * 0x9E3779B97F4A7C15)


def compose(request: BackendRequest, voice: Voice, digest: int) -> str:
    """The full text of the answer to `request` in `voice` (before any stop or token limit).

    Markdown: the simulated note, a heading naming the task's keywords, three to five bullets
    (each using one of them), a code sketch if the agent writes code, and a signature line.
    `digest` (the request's hash) picks the order of the bullets and numbers the answer.
    """
    words = _keywords(request.task) or _NO_WORDS
    count, template = voice.templates[digest >> 60]
    picked = _PICKS[len(words)][count](words)
    topic = ", ".join(words[:3])
    number = (digest >> 4) & 0xFFFFFF
    if voice.writes_code:
        name = words[0].lower().strip("_") or "value"
        return template % (topic, *picked, name, name, number)
    return template % (topic, *picked, number)


@functools.lru_cache(maxsize=256)
def voice_for(seed: int, model: str, agent: str, system: str) -> Voice:
    """The `Voice` of an agent (cached, bounded: a benchmark has few agents and system prompts)."""
    h = hashlib.blake2b(digest_size=8, person=b"agentnb-sim")
    for part in (str(seed), model, agent, system):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    key = int.from_bytes(h.digest(), "big")
    flavor, writes_code = _flavor(agent, system[:400])
    heading = {
        "review": "Review: ",
        "writer": "Draft: ",
        "general": "Proposed approach: " if writes_code else "Notes on ",
    }[flavor]
    head = f"{SIMULATED_NOTE}\n\n## {heading}%s\n\n"
    bullets = [f"- {_escape(t).replace('{w}', '%s')}\n" for t in _BULLETS[flavor]]
    code = f"\n```python\n{_CODE}\n```\n" if writes_code else "\n"
    tail = code + _escape(f"_{agent or 'assistant'} on {model}") + " (simulated answer #%06x)._"
    templates = []
    for order in _orders(len(bullets), key):
        templates.append((len(order), head + "".join(bullets[i] for i in order) + tail))
    return Voice(key, flavor, writes_code, tuple(templates))


def chunks(text: str) -> tuple[str, ...]:
    """The text as at most eight stream deltas of whole words (joined, they give it back)."""
    words = re.findall(r"\s*\S+\s*", text) or [text]
    size = math.ceil(len(words) / min(_MAX_CHUNKS, len(words)))
    return tuple("".join(words[i : i + size]) for i in range(0, len(words), size))


def mix(z: int) -> int:
    """splitmix64's finalizer: spreads the bits of `z` over 64 bits (a bijection)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


# -- the request's side ----------------------------------------------------------------------


def _digest(key: int, task: str, history: tuple[Message, ...]) -> int:
    crc = key & 0xFFFFFFFF
    for m in history:
        crc = zlib.crc32(f"{m.role}:{len(m.content)}:".encode(), crc)
        crc = zlib.crc32(_bounded(m.content), crc)
    crc = zlib.crc32(_bounded(task), crc)
    # A bijection of (crc, length) mixed by one odd multiplier: bits 60-63 pick the layout,
    # 28-59 the jitter (both depend on all of the input), 4-27 number the answer (the crc's).
    return ((((len(task) & 0xFFFFFFFF) << 32 | crc) ^ key) * 0x9E3779B97F4A7C15) & _MASK64


def _bounded(text: str) -> bytes:
    if len(text) > 2 * _HASHED_CHARS:
        text = text[:_HASHED_CHARS] + text[-_HASHED_CHARS:]
    return text.encode("utf-8", "surrogatepass")


def _keywords(task: str) -> list[str]:
    """Up to four distinct words from the task's start saying what it is about."""
    end = _KEYWORD_SPAN
    if len(task) > end:  # end at a space, so the last word is not cut
        end = task.rfind(" ", 0, end) + 1 or end
    words: list[str] = []
    for match in _WORD.finditer(task, 0, end):
        word = match.group()
        if word not in _STOP and word not in words:
            words.append(word)
            if len(words) == _MAX_WORDS:
                break
    return words


def _cut(text: str, request: BackendRequest) -> tuple[str, str, str | None]:
    """The text as the API would end it: at a stop sequence, or at `max_tokens` (~4 chars each).

    The note line always stays: every answer must say it is simulated.
    """
    budget = request.max_tokens * 4
    if request.stop_sequences:
        at, which = len(text), None
        for sequence in request.stop_sequences:
            i = text.find(sequence, len(SIMULATED_NOTE), at + len(sequence)) if sequence else -1
            if i != -1 and i < at:
                at, which = i, sequence
        # Written out in full within the budget: the model stops on it; else the budget ends it.
        if which is not None and at + len(which) <= max(budget, len(SIMULATED_NOTE)):
            return text[:at], "stop_sequence", which
    if len(text) > budget:
        return text[: max(budget, len(SIMULATED_NOTE))], "max_tokens", None
    return text, "end_turn", None


def _escape(text: str) -> str:
    return text.replace("%", "%%")


# -- the answers' pieces ---------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
_NO_WORDS = ["task"]
_STOPWORDS = """
this that with from these those into your about please what which when where there their them
then than have been were will would could should does find write using make give some more most
also only just each such other after before over under very here they code list review merge
summary step steps function return none true false import class self print pass else elif while
lambda yield
"""
# As written, capitalised and in capitals: no lower() per word.
_STOP = frozenset(s for w in _STOPWORDS.split() for s in (w, w.capitalize(), w.upper()))
_CODE_HINTS = ("python", "code", "program", "develop", "engineer", "debug", "bug", "function")
_CODE = '''def check_%s(value):
    """Sketch from the simulator: replace with real code."""
    if value is None:
        raise ValueError("%s is required")
    return value'''
_BULLETS = {
    "review": (
        "**{w}**: the intent is clear; document the edge cases.",
        "Check how `{w}` behaves with empty or very large input.",
        "The handling of **{w}** could be simpler and easier to test.",
        "Add a test that pins down the behaviour of `{w}`.",
        "Naming around **{w}** is consistent with the rest.",
        "Watch the error handling around `{w}`.",
    ),
    "writer": (
        "Open with **{w}** in one plain sentence.",
        "Give **{w}** a concrete example.",
        "Keep the part about **{w}** short; readers skim.",
        "Link **{w}** back to the main point.",
        "End the section on **{w}** with what to do next.",
    ),
    "general": (
        "Start from **{w}** and state the goal.",
        "**{w}**: list what is known and what is assumed.",
        "Compare two options for **{w}** before choosing.",
        "Measure the effect of **{w}** instead of guessing.",
        "Note the risks around **{w}**.",
    ),
}


def _orders(pool: int, key: int) -> list[tuple[int, ...]]:
    """`_LAYOUTS` orders of three to five of `pool` bullets, drawn from a voice's key."""
    orders = []
    for k in range(_LAYOUTS):
        bits = mix(key + k)
        count, bits = 3 + bits % 3, bits // 3
        left = list(range(pool))
        chosen = []
        for _ in range(min(pool, count)):
            chosen.append(left.pop(bits % len(left)))
            bits //= 8
        orders.append(tuple(chosen))
    return orders


def _flavor(agent: str, system_head: str) -> tuple[str, bool]:
    """The kind of answer an agent gives (review, writer, general) and whether it writes code."""
    probe = f"{agent} {system_head}".lower()
    flavor = "general"
    if any(k in probe for k in ("review", "critic", "audit")):
        flavor = "review"
    elif any(k in probe for k in ("writ", "summar", "edit", "docs")):
        flavor = "writer"
    return flavor, any(k in probe for k in _CODE_HINTS)


# _PICKS[n][count]: the keyword of each of `count` bullets, cycling through `n` keywords.
_PICKS: tuple[dict[int, Callable[[Sequence[str]], tuple[str, ...]]], ...] = tuple(
    {count: operator.itemgetter(*(i % max(n, 1) for i in range(count))) for count in (3, 4, 5)}
    for n in range(_MAX_WORDS + 1)
)
