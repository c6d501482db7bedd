"""Benchmarks: the same scripted agent work on agent-magic and on Claude Code, offline.

Run ``python -m bench`` (``--help`` for options). Both systems talk to the
fake Messages API server of :mod:`agent_magic.testing` on 127.0.0.1; the
model's side of every turn is scripted in :mod:`bench._script`, and both
systems run the same tool calls (Claude Code's tool names and input schemas
are ours). Findings and method: ``bench/NOTES.md``.
"""
