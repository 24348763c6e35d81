"""The magics inside a real Jupyter kernel, driven by nbclient (one kernel for every cell).

What only a kernel shows: its event loop is already running while the magics block; the live
outputs (a streamed answer, a workflow's progress table) arrive as `update_display_data`
messages; the display data carries the provenance metadata; and interrupting the kernel stops
a workflow promptly, keeps the finished steps, and leaves the kernel working.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

CHAIN = """\
name: chain
steps:
  - {id: a, agent: writer, max_tokens: 4, task: "short {{topic}}"}
  - {id: b, agent: python-expert, task: "long answer about {{a}}"}
"""

CELLS = [
    # 0: loading names the backend
    "%load_ext agentnb",
    # 1: the kernel's loop is running; blocking magics must still work under it
    "import asyncio\nprint(asyncio.get_running_loop().is_running())\n"
    "%config AgentNB.sim_latency_s = 0.6",
    # 2: streamed by default in a kernel
    "%agent writer Tell me about caches",
    # 3: a workflow with a live progress table
    "topic = 'caches'\n%config AgentNB.sim_latency_s = 0.3",
    "%%workflow -o fan\nname: fan\nsteps:\n"
    "  - {id: a, agent: writer, task: 'one {{topic}}'}\n"
    "  - {id: b, agent: writer, task: 'two {{topic}}'}\n"
    "  - {id: c, agent: writer, task: 'merge {{a}} {{b}}'}\n",
    # 5: an AgentnbError is one line
    "%agent no-such-agent hello",
    # 6: interrupted while step b runs (about 6 s of simulated tokens); a finishes at once
    "%config AgentNB.sim_latency_s = 0\n%config AgentNB.sim_latency_per_token_s = 0.05",
    "%%workflow -o part\n" + CHAIN,
    # 8: the next cells work, and the finished step was kept
    "print(part.steps['a'].status, part.steps['b'].status, part.steps['b'].reason)\n"
    "%config AgentNB.sim_latency_per_token_s = 0",
    "%%workflow -o again --quiet --resume part\n" + CHAIN,
    "print(again.steps['a'].status, again.steps['a'].reused, again.steps['b'].status)",
]
INTERRUPTED = 7


class RecordingClient(NotebookClient):
    """Records every iopub message per cell; interrupts the kernel once step `a` is shown done."""

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.messages: list[tuple[int, str, dict[str, Any]]] = []
        self.interrupted_at: float | None = None
        self.finished_at: float | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        kind, content = msg["msg_type"], msg["content"]
        self.messages.append((cell_index, kind, content))
        if cell_index == INTERRUPTED and self.interrupted_at is None and kind.endswith("_data"):
            text = content.get("data", {}).get("text/plain", "")
            if re.search(r"^  a\s+succeeded", text, re.MULTILINE):
                self.interrupted_at = time.monotonic()
                km: Any = self.km  # an AsyncKernelManager: interrupt_kernel is a coroutine
                task = asyncio.ensure_future(km.interrupt_kernel())
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        if cell_index == INTERRUPTED and kind == "error":
            self.finished_at = time.monotonic()
        return super().process_message(msg, cell, cell_index)

    def of(self, index: int, kind: str) -> list[dict[str, Any]]:
        return [c for i, k, c in self.messages if i == index and k == kind]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, RecordingClient]:
    tmp = tmp_path_factory.mktemp("kernel")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("AGENTNB_", "ANTHROPIC_")):
                mp.delenv(var)
        mp.setenv("AGENTNB_BACKEND", "simulated")
        mp.setenv("AGENTNB_SIM_JITTER", "0")
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        mp.setenv("XDG_CONFIG_HOME", str(tmp / "config"))
        v4: Any = nbformat.v4
        nb = v4.new_notebook()
        nb.cells = [v4.new_code_cell(source) for source in CELLS]
        client = RecordingClient(
            nb,
            kernel_name="python3",
            timeout=60,
            allow_errors=True,
            resources={"metadata": {"path": str(tmp)}},
        )
        client.execute()
    return nb, client


def stdout(nb: Any, index: int) -> str:
    return "".join(o.get("text", "") for o in nb.cells[index].outputs if o.get("name") == "stdout")


def test_loading_and_the_running_loop(executed: tuple[Any, RecordingClient]) -> None:
    nb, _ = executed
    assert stdout(nb, 0) == (
        "agentnb: agents answer with the offline simulator (backend=simulated)\n"
    )
    assert stdout(nb, 1) == "True\n"


def test_agent_streams_in_place_then_shows_markdown_with_provenance(
    executed: tuple[Any, RecordingClient],
) -> None:
    nb, client = executed
    shown = client.of(2, "display_data")
    updates = client.of(2, "update_display_data")
    assert len(shown) == 1  # made with the first text
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    texts = [shown[0]["data"]["text/plain"]] + [u["data"]["text/plain"] for u in updates]
    assert len(texts) >= 4  # several partial texts, then the clearing update
    assert texts[-1] == ""  # the stream gives way to the rendered result
    growing = texts[:-1]
    assert all(a and b.startswith(a) for a, b in itertools.pairwise(growing))
    (result,) = client.of(2, "execute_result")
    assert result["data"]["text/markdown"].startswith(growing[-1])
    assert "simulated" in result["data"]["text/markdown"]
    assert result["metadata"]["agentnb"] == {
        "agent": "writer",
        "model": "claude-sonnet-5-5",
        "backend": "simulated",
        "cached": False,
        "simulated": True,
    }
    assert nb.cells[2].outputs[-1]["output_type"] == "execute_result"


def test_workflow_progress_updates_in_place(executed: tuple[Any, RecordingClient]) -> None:
    _, client = executed
    (shown,) = client.of(4, "display_data")
    assert shown["metadata"]["agentnb"] == {"workflow": "fan", "live": True}
    assert "<table>" in shown["data"]["text/html"]
    texts = [u["data"]["text/plain"] for u in client.of(4, "update_display_data")]
    joined = "\n".join(texts)
    assert re.search(r"^  a\s+running", joined, re.MULTILINE)
    assert re.search(r"^  c\s+succeeded\s+0\.\d\d s", joined, re.MULTILINE)
    assert texts[-1] == ""  # cleared: the WorkflowRun below shows the final state
    (result,) = client.of(4, "execute_result")
    assert "workflow &#x27;fan&#x27; succeeded" in result["data"]["text/html"]


def test_agentnb_errors_are_one_line_in_a_kernel(executed: tuple[Any, RecordingClient]) -> None:
    nb, client = executed
    assert [o["output_type"] for o in nb.cells[5].outputs] == ["error"]
    (error,) = client.of(5, "error")
    assert error["ename"] == "AgentNotFoundError"
    assert len(error["traceback"]) == 1
    assert error["traceback"][0].startswith("AgentNotFoundError: no agent named 'no-such-agent'")


def test_interrupt_stops_promptly_keeps_finished_steps_and_the_kernel_works(
    executed: tuple[Any, RecordingClient],
) -> None:
    nb, client = executed
    assert client.interrupted_at is not None, "step a was never shown as succeeded"
    (error,) = client.of(INTERRUPTED, "error")
    assert error["ename"] == "KeyboardInterrupt"
    assert client.finished_at is not None
    assert client.finished_at - client.interrupted_at < 3.0  # b alone would take ~5 s
    notes = [c["text"] for c in client.of(INTERRUPTED, "stream") if c["name"] == "stderr"]
    assert "1 of 2 steps had finished; the partial run is in part" in "".join(notes)
    texts = [u["data"]["text/plain"] for u in client.of(INTERRUPTED, "update_display_data")]
    assert " - interrupted" in texts[-1].splitlines()[0]  # the last state stays visible
    assert stdout(nb, INTERRUPTED + 1) == "succeeded skipped cancelled while running\n"
    assert nb.cells[INTERRUPTED + 2].outputs == []  # --quiet with -o: no output at all
    assert stdout(nb, INTERRUPTED + 3) == "cached True succeeded\n"
