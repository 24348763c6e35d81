"""The magics inside a real Jupyter kernel, driven by nbclient (one kernel for every cell).

What only a kernel shows: its event loop is already running while the magics block; the live
outputs (a streamed answer, a workflow's progress table) arrive as `update_display_data`
messages and then give way to the cell's value without leaving an empty output; the display
data carries the provenance metadata; and interrupting the kernel stops a workflow or a streamed
answer promptly, keeps the finished steps, and leaves the kernel working.

No test depends on how fast the machine is: where time matters, the limits are far above what
the work takes (an interrupted call would take 20 s or more to finish; the test allows 10).
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
    # 6: interrupted while step b runs (about 27 s of simulated tokens); a takes about 1 s
    "%config AgentNB.sim_latency_s = 0\n%config AgentNB.sim_latency_per_token_s = 0.2",
    "%%workflow -o part\n" + CHAIN,
    # 8: the next cells work, and the finished step was kept
    "print(part.steps['a'].status, part.steps['b'].status, part.steps['b'].reason)\n"
    "%config AgentNB.sim_latency_per_token_s = 0",
    "%%workflow -o again --quiet --resume part\n" + CHAIN,
    "print(again.steps['a'].status, again.steps['a'].reused, again.steps['b'].status)",
    # 11: a streamed answer sharing its cell with other code: the other output stays
    "print('before')\n%agent writer Tell me about queues",
    # 12: alone in its cell but assigned: the live output ends as the answer's display
    "# a comment\nr = %agent writer Name a colour",
    # 13: a streamed answer interrupted (about 30 s of simulated tokens)
    "%config AgentNB.sim_latency_per_token_s = 0.2",
    "%agent python-expert Explain interrupts at length",
    # 15: the call was cancelled and recorded so; the next cell works
    "%config AgentNB.sim_latency_per_token_s = 0\n%agentnb metrics -o calls\n"
    "print(calls['agent'].iloc[-1], calls['success'].iloc[-1], calls['error_type'].iloc[-1])",
    "%agent writer After the interrupt",
]
INTERRUPTED = 7
SHARED, ASSIGNED, STREAM_INTERRUPTED = 11, 12, 14
#: Far above what stopping takes (well under a second), far below finishing (20 s or more).
PROMPT_S = 10.0


class RecordingClient(NotebookClient):
    """Records every iopub message per cell, and interrupts the kernel twice.

    The workflow of cell `INTERRUPTED` once step `a` is shown done; the streamed answer of cell
    `STREAM_INTERRUPTED` once its first text is shown.
    """

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.messages: list[tuple[int, str, dict[str, Any]]] = []
        self.interrupted_at: dict[int, float] = {}
        self.finished_at: dict[int, float] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        kind, content = msg["msg_type"], msg["content"]
        self.messages.append((cell_index, kind, content))
        if cell_index not in self.interrupted_at and kind.endswith("display_data"):
            text = content.get("data", {}).get("text/plain", "")
            if (
                cell_index == INTERRUPTED and re.search(r"^  a\s+succeeded", text, re.MULTILINE)
            ) or (cell_index == STREAM_INTERRUPTED and text):
                self.interrupted_at[cell_index] = time.monotonic()
                km: Any = self.km  # an AsyncKernelManager: interrupt_kernel is a coroutine
                task = asyncio.ensure_future(km.interrupt_kernel())
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        if kind == "error":
            self.finished_at[cell_index] = time.monotonic()
        return super().process_message(msg, cell, cell_index)

    def took(self, index: int) -> float:
        """Seconds from the interrupt of cell `index` to its error."""
        assert index in self.interrupted_at, f"cell {index} was never interrupted"
        assert index in self.finished_at, f"cell {index} did not end with an error"
        return self.finished_at[index] - self.interrupted_at[index]

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


def test_agent_streams_in_place_then_gives_way_to_markdown_with_provenance(
    executed: tuple[Any, RecordingClient],
) -> None:
    nb, client = executed
    shown = client.of(2, "display_data")
    updates = client.of(2, "update_display_data")
    assert len(shown) == 1  # made with the first text
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    texts = [shown[0]["data"]["text/plain"]] + [u["data"]["text/plain"] for u in updates]
    assert len(texts) >= 4  # several partial texts, then the finished answer
    growing = texts[:-1]
    assert all(a and b.startswith(a) for a, b in itertools.pairwise(growing))
    (result,) = client.of(2, "execute_result")
    assert result["data"]["text/markdown"].startswith(growing[-1])
    assert "simulated" in result["data"]["text/markdown"]
    provenance = {
        "agent": "writer",
        "model": "claude-sonnet-5-5",
        "backend": "simulated",
        "cached": False,
        "simulated": True,
    }
    assert result["metadata"]["agentnb"] == provenance
    # The live output ends as the answer's own display, then is cleared for the cell's value.
    assert updates[-1]["data"] == result["data"]
    assert updates[-1]["metadata"]["agentnb"] == provenance
    assert client.of(2, "clear_output") == [{"wait": True}]
    assert [o["output_type"] for o in nb.cells[2].outputs] == ["execute_result"]


def test_a_shared_cell_keeps_its_other_outputs(executed: tuple[Any, RecordingClient]) -> None:
    nb, client = executed
    assert client.of(SHARED, "clear_output") == []  # it would erase "before"
    assert stdout(nb, SHARED) == "before\n"
    assert client.of(SHARED, "update_display_data")[-1]["data"] == {}  # emptied: shows nothing
    kinds = [o["output_type"] for o in nb.cells[SHARED].outputs]
    assert kinds == ["stream", "display_data", "execute_result"]
    assert nb.cells[SHARED].outputs[1]["data"] == {}


def test_an_assigned_answer_stays_as_its_final_display(
    executed: tuple[Any, RecordingClient],
) -> None:
    nb, client = executed
    assert client.of(ASSIGNED, "clear_output") == [{"wait": True}]  # but nothing came after it
    (output,) = nb.cells[ASSIGNED].outputs
    assert output["output_type"] == "display_data"
    assert output["data"]["text/markdown"].endswith("simulated</sub>")  # with its footer
    assert output["metadata"]["agentnb"]["agent"] == "writer"


def test_workflow_progress_updates_in_place(executed: tuple[Any, RecordingClient]) -> None:
    nb, client = executed
    (shown,) = client.of(4, "display_data")
    assert shown["metadata"]["agentnb"] == {"workflow": "fan", "live": True}
    assert "<table>" in shown["data"]["text/html"]
    updates = client.of(4, "update_display_data")
    texts = [u["data"]["text/plain"] for u in updates]
    joined = "\n".join(texts)
    assert re.search(r"^  a\s+running", joined, re.MULTILINE)
    assert re.search(r"^  c\s+succeeded\s+\d+\.\d\d s", joined, re.MULTILINE)
    (result,) = client.of(4, "execute_result")
    assert "workflow &#x27;fan&#x27; succeeded" in result["data"]["text/html"]
    assert updates[-1]["data"] == result["data"]  # the live table ends as the run's display
    assert client.of(4, "clear_output") == [{"wait": True}]  # ... then gives way to it
    assert [o["output_type"] for o in nb.cells[4].outputs] == ["execute_result"]
    assert result["metadata"]["agentnb"] == {
        "workflow": "fan",
        "backend": "simulated",
        "simulated": True,
        "steps": {
            step: {
                "agent": "writer",
                "model": "claude-sonnet-5-5",
                "cached": False,
                "status": "succeeded",
            }
            for step in "abc"
        },
    }


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
    (error,) = client.of(INTERRUPTED, "error")
    assert error["ename"] == "KeyboardInterrupt"
    assert client.took(INTERRUPTED) < PROMPT_S  # b alone would take about 27 s
    notes = [c["text"] for c in client.of(INTERRUPTED, "stream") if c["name"] == "stderr"]
    assert "1 of 2 steps had finished; the partial run is in part" in "".join(notes)
    texts = [u["data"]["text/plain"] for u in client.of(INTERRUPTED, "update_display_data")]
    assert " - interrupted" in texts[-1].splitlines()[0]  # the last state stays visible
    assert stdout(nb, INTERRUPTED + 1) == "succeeded skipped cancelled while running\n"
    assert nb.cells[INTERRUPTED + 2].outputs == []  # --quiet with -o: no output at all
    assert stdout(nb, INTERRUPTED + 3) == "cached True succeeded\n"


def test_interrupting_a_streamed_answer_cancels_it_and_the_kernel_works(
    executed: tuple[Any, RecordingClient],
) -> None:
    nb, client = executed
    (error,) = client.of(STREAM_INTERRUPTED, "error")
    assert error["ename"] == "KeyboardInterrupt"
    assert client.took(STREAM_INTERRUPTED) < PROMPT_S  # the whole answer takes about 30 s
    (shown,) = client.of(STREAM_INTERRUPTED, "display_data")
    assert shown["data"]["text/plain"]  # the text that had arrived stays visible
    assert client.of(STREAM_INTERRUPTED, "execute_result") == []
    assert stdout(nb, STREAM_INTERRUPTED + 1) == "python-expert False CancelledError\n"
    (after,) = client.of(STREAM_INTERRUPTED + 2, "execute_result")
    assert after["metadata"]["agentnb"]["agent"] == "writer"
    assert client.of(STREAM_INTERRUPTED + 2, "error") == []
