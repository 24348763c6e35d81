"""The orchestrator inside a real Jupyter kernel (its event loop is already running)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel


def run_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *sources: str) -> list[str]:
    """Execute `sources` as cells in a fresh python3 kernel; return each cell's stdout."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = []
    for cell in nb.cells:
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        outputs.append(text)
    return outputs


def test_blocking_and_awaited_calls_in_a_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_cells(
        tmp_path,
        monkeypatch,
        "import asyncio, agentnb\n"
        "cfg = agentnb.Config.load(backend='simulated', sim_latency_s=0.01, cache_enabled=False)\n"
        "orch = agentnb.AgentOrchestrator(cfg)\n"
        "print(asyncio.get_running_loop().is_running())",
        # A blocking call while the kernel's own loop is running (asyncio.run would fail here).
        "r = orch.execute_agent('writer', 'hello from a kernel')\n"
        "print(r.agent, r.simulated, r.attempts)",
        "rs = orch.execute_multiple([('writer', f't{i}') for i in range(20)], max_concurrency=5)\n"
        "print(len(rs), orch.backend.peak_in_flight)",
        # Top-level await on the kernel's loop.
        "r2 = await orch.aio.execute_agent('python-expert', 'awaited')\nprint(r2.agent)",
        "print(''.join(orch.stream_agent('writer', 'stream')) != '')",
        "print(len(orch.metrics()))",
    )
    assert out[0].strip() == "True"
    assert out[1].strip() == "writer True 1"
    assert out[2].strip() == "20 5"
    assert out[3].strip() == "python-expert"
    assert out[4].strip() == "True"
    assert out[5].strip() == "23"  # 1 + 20 + 1 awaited + 1 streamed
