"""The IPython extension: `%load_ext agentnb` adds `%agent`, `%workflow` and `%agentnb`.

    %load_ext agentnb
    %agent writer Write a haiku about caches             # one agent; `_` holds the AgentResult
    %%agent -o review python-expert                      # the cell body is the task
    Review this function: {{src}}
    %%workflow -o run                                    # a YAML workflow, shown live
    %agentnb metrics --plot                              # every call of the session
    %config AgentNB.max_concurrency = 4                  # any setting (see %config AgentNB)

Loading prints one line naming the backend (the offline simulator, or Claude when
`ANTHROPIC_API_KEY` is set) and creates nothing else: the orchestrator, the API client and the
cache database are made on the first command. Loading adds the magics, two entries to `%config`
(`AgentNB` for the settings, `AgentMagics`) and one input transform (so that
`%agent writer What is a closure?` asks rather than opening help on `closure`);
`%unload_ext agentnb` removes exactly those. It registers no event callbacks and puts nothing in
the namespace; variables stored with `-o` belong to the user and stay. The shared orchestrator
(`agentnb.default_orchestrator()`, with the session's call records and cache) is not closed, so
it outlives `%reload_ext agentnb`; `%config AgentNB` settings survive a reload too.
"""

from __future__ import annotations

from typing import Any

from .magics import AgentMagics
from .parsing import fill_placeholders, keep_questions, one_line_errors
from .settings import SETTINGS, AgentNB

__all__ = [
    "SETTINGS",
    "AgentMagics",
    "AgentNB",
    "fill_placeholders",
    "keep_questions",
    "load_ipython_extension",
    "one_line_errors",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the `AgentNB` settings; print which backend answers."""
    session = AgentNB(parent=ipython)
    magics = AgentMagics(ipython, session)  # Magics adds itself to ipython.configurables
    ipython.register_magics(magics)
    ipython.configurables.append(session)
    if keep_questions not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(keep_questions)
    print(session.banner())


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, both configurables and the input transform that loading added."""
    if keep_questions in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(keep_questions)
    manager = ipython.magics_manager
    magics = manager.registry.get(AgentMagics.__name__)
    if not isinstance(magics, AgentMagics):
        return
    for kind, table in magics.magics.items():
        for name, func in table.items():
            if manager.magics[kind].get(name) == func:
                del manager.magics[kind][name]
    del manager.registry[AgentMagics.__name__]
    for added in (magics, magics.session):
        if added in ipython.configurables:
            ipython.configurables.remove(added)
