"""The ``agent-magic`` command: sessions, checkpoints and rewinds without a kernel.

Examples::

    agent-magic sessions --all
    agent-magic checkpoints 3f2a
    agent-magic rewind 3f2a 9c1b --dry-run
    agent-magic rewind 3f2a 9c1b --conversation
    agent-magic export 3f2a analysis.agent-session.zip
    agent-magic demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._errors import AgentMagicError
from ._redact import redact_url


def _when(ms: int | str | None) -> str:
    if ms is None or ms == "":
        return "-"
    if isinstance(ms, str):
        try:
            return datetime.fromisoformat(ms.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return ms
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def _cost(v: float | None) -> str:
    return "unknown" if v is None else f"${v:.4f}"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _short(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def cmd_sessions(args: argparse.Namespace) -> int:
    from ._api import list_sessions

    if args.all or (args.scope is None and args.directory is None):
        rows = list_sessions(limit=args.limit, home=args.home)
    elif args.scope is not None:
        rows = list_sessions(scope=args.scope, limit=args.limit, home=args.home)
    else:
        rows = list_sessions(directory=args.directory, limit=args.limit, home=args.home)
    if args.json:
        print(json.dumps([vars(r) for r in rows], indent=1))
        return 0
    if not rows:
        print("No sessions yet. Start one with %%agent in a notebook, or agent_magic.query().")
        return 0
    print(
        _table(
            [
                [r.session_id[:8], _when(r.last_modified), str(r.num_turns), _cost(r.total_cost_usd),
                 (r.parent_session_id or "")[:8], _short(r.summary, 50), _short(r.scope, 40)]
                for r in rows
            ],
            ["id", "last active", "turns", "cost", "fork of", "title / first prompt", "scope"],
        )
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ._api import get_session_info

    info = get_session_info(args.session, home=args.home)
    d = vars(info)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    for k, v in d.items():
        if k in ("created_at", "last_modified"):
            v = _when(v)
        print(f"{k:18} {v}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from ._api import get_session_messages
    from .store.transcript import prompt_text

    for m in get_session_messages(args.session, home=args.home):
        content = m.message.get("content")
        if m.is_compact_boundary:
            pre, post = m.message.get("pre_tokens"), m.message.get("post_tokens")
            counts = f": {pre:,} -> {post:,} tokens" if isinstance(pre, int) and isinstance(post, int) else ""
            print(f"\n[{m.uuid[:8]}] compacted ({m.message.get('trigger') or 'auto'}){counts}; the model continued from a summary")
        elif m.type == "user" and m.is_prompt:
            print(f"\n[{m.uuid[:8]}] you: {prompt_text(m.message)}")
        elif m.type == "assistant" and isinstance(content, list):
            for b in content:
                if b.get("type") == "text":
                    print(f"[{m.uuid[:8]}] agent: {b['text']}")
                elif b.get("type") == "tool_use":
                    print(f"[{m.uuid[:8]}] agent uses {b['name']}({_short(json.dumps(b.get('input')), 80)})")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from ._api import list_checkpoints

    cps = list_checkpoints(args.session, home=args.home)
    if args.json:
        print(json.dumps([vars(c) for c in cps], indent=1))
        return 0
    if not cps:
        print("No checkpoints in this session.")
        return 0
    print(
        _table(
            [
                [str(c.turn), c.checkpoint_id[:8], _when(c.timestamp), _short(c.prompt, 40),
                 _short(", ".join(c.files), 50) or "-", str(len(c.cells))]
                for c in cps
            ],
            ["turn", "checkpoint", "time", "prompt", "files changed", "cells"],
        )
    )
    return 0


def _print_rewind(result: Any) -> None:
    for ch in result.changes:
        print(f"{ch.action:15} {ch.path}" + (f"  ({ch.note})" if ch.note else ""))
        for cc in ch.cells:
            print(f"  cell {cc.cell_id}: {cc.action}")
    for d in result.dirs_removed:
        print(f"{'remove folder':15} {d}")
    for d in result.dirs_created:
        print(f"{'create folder':15} {d}")
    for c in result.conflicts:
        where = f"{c.path}" + (f" cell {c.cell_id}" if c.cell_id else "")
        print(f"{'CONFLICT':15} {where}: {c.reason}")
    for u in result.unrestorable:
        print(f"{'NOT RESTORABLE':15} {u} (no backup: too large or missing)")
    if result.kernel_note:
        print(result.kernel_note)
    print(result.summary())


def cmd_rewind(args: argparse.Namespace) -> int:
    from ._api import rewind

    result = rewind(
        args.session, args.checkpoint, conversation=args.conversation, dry_run=args.dry_run, force=args.force, home=args.home
    )
    if args.json:
        print(json.dumps({"checkpoint_id": result.checkpoint_id, "changes": [vars(c) | {"cells": [vars(x) for x in c.cells]} for c in result.changes],
                          "conflicts": [vars(c) for c in result.conflicts], "new_session_id": result.new_session_id,
                          "kernel_note": result.kernel_note}, indent=1))
        return 0 if result.ok else 1
    if args.dry_run and args.diff:
        for ch in result.changes:
            if ch.diff:
                print(ch.diff)
            for cc in ch.cells:
                if cc.diff:
                    print(cc.diff)
    _print_rewind(result)
    if result.new_session_id:
        print(f"Conversation rewound: continue in the new session {result.new_session_id[:8]} "
              f"(the original {args.session[:8]} is unchanged).")
    if result.conflicts and not args.force:
        print("Conflicting paths were left alone; run again with --force to overwrite them.")
    return 0 if result.ok else 1


def cmd_fork(args: argparse.Namespace) -> int:
    from ._api import fork_session

    print(fork_session(args.session, up_to_message_id=args.at, title=args.title, home=args.home))
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    from ._api import rename_session

    rename_session(args.session, args.title, home=args.home)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ._api import delete_session, get_session_info

    info = get_session_info(args.session, home=args.home)
    if not args.yes:
        answer = input(f"Delete session {info.session_id[:8]} ({_short(info.summary, 40)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Not deleted.")
            return 1
    delete_session(info.session_id, home=args.home)
    print(f"Deleted {info.session_id[:8]}.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ._bundle import export_session

    out = export_session(args.session, args.path, home=args.home)
    print(f"Exported to {out} ({out.stat().st_size} bytes).")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ._bundle import import_session

    sid = import_session(args.path, home=args.home, new_session_id=args.as_id, cwd=args.cwd, scope=args.scope)
    print(f"Imported session {sid}. Resume it with `%agent resume {sid[:8]}`.")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .testing import FakeAnthropicServer
    from .testing.walkthrough import install_walkthrough

    server = FakeAnthropicServer(port=args.port)
    if args.script == "walkthrough":
        install_walkthrough(server)
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return int(run_demo(no_browser=args.no_browser, port=args.port, directory=args.dir, lab_args=args.lab_args))


def cmd_sync(args: argparse.Namespace) -> int:
    import anyio

    from ._errors import ConfigurationError
    from .store.local import SessionStore
    from .store.sync import holder_name, shared_store_sync

    url = args.store or os.environ.get("AGENT_MAGIC_STORE")
    if url and url.lower().startswith("s3:"):
        global _USED_S3
        _USED_S3 = True
    if not url:
        raise ConfigurationError("No shared store: pass --store URL or set AGENT_MAGIC_STORE (s3://..., postgresql://..., redis://..., file:///...).")
    local = SessionStore.at(args.home)
    sync = shared_store_sync(url, local)
    assert sync is not None

    async def go() -> int:
        try:
            return await sync_all()
        finally:
            await sync.remote.aclose()

    async def sync_all() -> int:
        if args.take_over:
            sid = local.resolve(args.take_over)
            await sync.remote.acquire_lease(sid, holder_name(), 1.0, take_over=True)
            await sync.remote.release_lease(sid, holder_name())
            print(f"{sid[:8]}: took the writer lease over and released it; any host can write it now.")
        wanted = [local.resolve(s) if local.exists(s) or len(s) >= 4 else s for s in args.sessions]
        remote_ids = set(await sync.remote_session_ids())
        here = set(local.session_dirs())
        ids = wanted or sorted(here | remote_ids)
        failed = 0
        for sid in ids:
            try:
                if sid in here:
                    pushed = await sync.push(sid)
                    if pushed:
                        print(f"{sid[:8]}: pushed {pushed.lines} lines, {pushed.records} checkpoint records, {pushed.blobs} backups")
                pulled = await sync.pull(sid)
                if pulled:
                    print(f"{sid[:8]}: pulled {pulled.lines} lines, {pulled.records} checkpoint records, {pulled.blobs} backups")
            except Exception as e:  # one session's failure does not stop the others
                failed += 1
                print(f"{sid[:8]}: not synced ({type(e).__name__}: {e})", file=sys.stderr)
        print(f"{len(ids) - failed} session{'s' * (len(ids) - failed != 1)} in sync with {redact_url(url)}" + (f"; {failed} failed" if failed else ""))
        return 1 if failed else 0

    return int(anyio.run(go))


def cmd_acp(args: argparse.Namespace) -> int:
    from .acp import serve

    return serve(home=args.home, model=args.model, permission_mode=args.permission_mode)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent-magic",
        description="Agent sessions for Jupyter: list, inspect, rewind and move sessions without a kernel.",
    )
    p.add_argument("--home", help="session store (default: $AGENT_MAGIC_HOME or the per-user data directory)")
    p.add_argument(
        "--store", dest="shared_store",
        help="shared store sessions are also found in and pushed to: s3://..., postgresql://..., redis://..., file:///... "
        "(default: $AGENT_MAGIC_STORE)",
    )
    p.add_argument("--version", action="version", version=f"agent-magic {__import__('agent_magic').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("sessions", help="list sessions, newest first")
    s.add_argument("--all", action="store_true", help="every scope (the default unless --scope/--directory)")
    s.add_argument("--scope", help="only this notebook path or directory")
    s.add_argument("--directory", help="only sessions of this project directory")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sessions)

    s = sub.add_parser("info", help="details of one session")
    s.add_argument("session")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("history", help="the conversation of a session")
    s.add_argument("session")
    s.set_defaults(func=cmd_history)

    s = sub.add_parser("checkpoints", help="a session's checkpoints: turn, time, prompt, files and cells changed")
    s.add_argument("session")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_checkpoints)

    s = sub.add_parser("rewind", help="put files and cells back as they were before a checkpoint")
    s.add_argument("session")
    s.add_argument("checkpoint")
    s.add_argument("--dry-run", action="store_true", help="show what would change; touch nothing")
    s.add_argument("--diff", action="store_true", help="with --dry-run: print the diffs")
    s.add_argument("--force", action="store_true", help="also overwrite files and cells changed by someone else")
    s.add_argument("--conversation", action="store_true", help="also rewind the conversation (forks the session)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_rewind)

    s = sub.add_parser("fork", help="copy a session into a new one")
    s.add_argument("session")
    s.add_argument("--at", help="last message id to copy (default: all)")
    s.add_argument("--title")
    s.set_defaults(func=cmd_fork)

    s = sub.add_parser("rename", help="give a session a title")
    s.add_argument("session")
    s.add_argument("title")
    s.set_defaults(func=cmd_rename)

    s = sub.add_parser("delete", help="delete a session")
    s.add_argument("session")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask")
    s.set_defaults(func=cmd_delete)

    s = sub.add_parser("export", help="write a session with its checkpoints to one file")
    s.add_argument("session")
    s.add_argument("path")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import", help="import a session file made by export")
    s.add_argument("path")
    s.add_argument("--as", dest="as_id", help="import under this session id")
    s.add_argument("--cwd", help="the project directory here (if it moved)")
    s.add_argument("--scope", help="the notebook path or directory it belongs to here")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("sync", help="push sessions to the shared store and pull the ones this host lacks")
    s.add_argument("sessions", nargs="*", help="only these sessions (default: every session here and there)")
    s.add_argument("--store", help="the shared store URL (default: $AGENT_MAGIC_STORE)")
    s.add_argument("--take-over", metavar="SESSION", help="take SESSION's writer lease from a host that is gone")
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("serve-fake-api", help="run the scripted fake Messages API server (for tests and CI)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--script", choices=["walkthrough", "none"], default="walkthrough")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("acp", help="run as an Agent Client Protocol agent on stdio (Jupyter AI, Zed, JetBrains)")
    s.add_argument("--model", help="model for new sessions (default: $AGENT_MAGIC_MODEL or the provider's)")
    s.add_argument(
        "--permission-mode", default="default", choices=["default", "acceptEdits", "plan", "bypassPermissions"],
        help="permission mode new sessions start in (the client can change it per session)",
    )
    s.set_defaults(func=cmd_acp)

    s = sub.add_parser("demo", help="try agent-magic without an API key: JupyterLab on a scripted quickstart")
    s.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    s.add_argument("--port", type=int, default=0, help="JupyterLab port (default: a free one)")
    s.add_argument("--dir", help="folder for the demo copy (default: a new temporary folder)")
    s.add_argument("lab_args", nargs=argparse.REMAINDER, help="extra arguments for jupyter lab (after --)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    saved = os.environ.get("AGENT_MAGIC_STORE")
    if args.shared_store:
        os.environ["AGENT_MAGIC_STORE"] = args.shared_store  # the session helpers read it
    global _USED_S3
    _USED_S3 = _USED_S3 or (os.environ.get("AGENT_MAGIC_STORE") or "").lower().startswith("s3:")
    try:
        return int(args.func(args) or 0)
    except AgentMagicError as e:
        print(f"agent-magic: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if args.shared_store:  # main() may be called again in this process (tests, notebooks)
            if saved is None:
                os.environ.pop("AGENT_MAGIC_STORE", None)
            else:
                os.environ["AGENT_MAGIC_STORE"] = saved


#: The command used an S3 store (see run()).
_USED_S3 = False


def run() -> None:
    """The ``agent-magic`` command: :func:`main`, then exit with its code."""
    code = main()
    if _USED_S3:
        # obstore's runtime threads can abort the interpreter's shutdown right after a failed
        # request (exit 134 instead of ours): leave without it, output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()

