"""`lethe serve` (embedded: API + worker, SQLite, SQLite-backed Celery broker) and
`lethe takedown submit … --follow`. Mounted by `lethe/cli.py`."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from app.embedded_worker import SupervisedWorker, declare_queues
from app.settings import REPO_ROOT

console = Console()
takedown_app = typer.Typer(help="File and follow takedowns.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="database, broker and artifacts")] = Path("data"),
) -> None:
    """Start the API and one worker on this machine (no Postgres, Redis or GPU needed)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LETHE_DATA_DIR", str(data_dir))
    os.environ.setdefault("LETHE_ALLOWED_MODEL_ROOT", str(data_dir / "models"))
    from app.db.session import reset_engine
    from app.settings import get_settings

    get_settings.cache_clear()
    reset_engine()
    migrate_to_head()
    _announce_admin_key(get_settings().admin_key)
    declare_queues()
    # uvicorn re-raises the SIGTERM it caught after shutting down; with the default action
    # that would end this process before `finally` stops the worker, leaving it orphaned.
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _as_sigterm)  # the terminal closed
    worker = SupervisedWorker()
    terminated = False
    try:
        worker.start()
        import uvicorn

        from app.main import create_app

        console.print(f"Lethe is serving on [bold]http://{host}:{port}[/bold] "
                      f"(data in {data_dir}; API docs at /docs)")
        uvicorn.run(create_app(), host=host, port=port, log_level="warning")
    except Terminated:
        terminated = True
    finally:
        for stop_signal in STOP_SIGNALS:  # a second one must not cut the worker's grace
            signal.signal(stop_signal, signal.SIG_IGN)
        worker.stop()
    if terminated:  # end as SIGTERM would have, now that the worker is down
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Terminated(Exception):
    """SIGTERM arrived: leave the server, stop the worker, then end by the signal."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def _as_sigterm(_signum: int, _frame: object) -> None:
    """SIGHUP is handled as SIGTERM is: uvicorn shuts down on SIGTERM, while an exception
    raised in a handler would only be logged by its event loop."""
    os.kill(os.getpid(), signal.SIGTERM)


def _announce_admin_key(configured: str) -> None:
    """Store LETHE_ADMIN_KEY, or create a first admin key and print it (only this once)."""
    from app.db.session import session_scope
    from app.services import keys

    with session_scope() as session:
        secret = keys.ensure_admin(session, configured)
    if secret:
        console.print(f"First admin API key (shown once, store it now): [bold]{secret}[/bold]")


def migrate_to_head() -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


@takedown_app.command("submit")
def submit(
    concept: Annotated[str, typer.Argument(help="the concept to remove")],
    model: Annotated[str, typer.Option(help="model id or name")] = "conceptworld",
    kind: Annotated[str, typer.Option(help="person, style, object, character, nsfw, other")]
    = "other",
    legal_basis: Annotated[str, typer.Option(help="copyright, dmca, privacy, gdpr_art17, …")]
    = "other",
    claimant_name: Annotated[str, typer.Option()] = "CLI user",
    claimant_email: Annotated[str, typer.Option()] = "cli@example.com",
    external_ref: Annotated[str | None, typer.Option(help="ticket id")] = None,
    url: Annotated[str, typer.Option(help="Lethe API base URL")] = "http://127.0.0.1:8000",
    follow: Annotated[bool, typer.Option(help="show live progress until done")] = False,
    api_key: Annotated[str, typer.Option(envvar="LETHE_API_KEY",
                                         help="key with takedowns:write and :read")] = "",
) -> None:
    """File a takedown; with --follow, draw its progress from the event stream."""
    body = {"model": model, "concept": concept, "kind": kind, "legal_basis": legal_basis,
            "claimant": {"name": claimant_name, "email": claimant_email},
            "external_ref": external_ref}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(f"{url}/v1/takedowns", json=body, headers=headers, timeout=30)
    if response.status_code != 202:
        console.print(f"[red]refused ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    takedown = response.json()
    console.print(f"takedown [bold]{takedown['id']}[/bold] is {takedown['state']}")
    if follow:
        final = follow_events(url, takedown["id"], headers)
        raise typer.Exit(0 if final == "completed" else 1)


def follow_events(url: str, takedown_id: str, headers: dict[str, str] | None = None) -> str:
    """Render the SSE stream as a progress bar; return the final state."""
    state = "queued"
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>5.1f}%"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar, httpx.stream(
            "GET", f"{url}/v1/takedowns/{takedown_id}/events", headers=headers,
            timeout=None) as stream:
        task = bar.add_task(state, total=100)
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if kind == "state":
                    state = data["state"]
                    bar.update(task, description=state)
                else:
                    bar.update(task, completed=data["percent"],
                               description=f"{state}: {data['stage']}")
    console.print(f"takedown {takedown_id} ended [bold]{state}[/bold]")
    return state


keys_app = typer.Typer(help="API keys (talks to the database in LETHE_DATABASE_URL).",
                       no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    scopes: Annotated[str, typer.Option(help="comma-separated: takedowns:write, "
                                        "takedowns:read, models:admin, audit:read")],
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "cli",
) -> None:
    """Create a key; the secret is printed once and only its hash is stored."""
    from app.db.session import session_scope
    from app.services import keys

    with session_scope() as session:
        session.info["actor"] = "cli"
        row, secret = keys.create(session, name, [s.strip() for s in scopes.split(",") if s])
    console.print(f"key {row.id} ({', '.join(row.scopes)}):")
    print(secret)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="key id or its prefix")]) -> None:
    from app.db.session import session_scope
    from app.services import keys

    with session_scope() as session:
        session.info["actor"] = "cli"
        keys.revoke(session, key_id)
    console.print(f"revoked {key_id}")


@keys_app.command("list")
def keys_list() -> None:
    from app.db.session import session_scope
    from app.services import keys

    with session_scope() as session:
        for k in keys.list_keys(session):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            console.print(f"{k.id}  {k.prefix}…  {k.name}  {','.join(k.scopes)}  {state}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first broken row."""
    from app.db.session import session_scope
    from app.services import audit

    with session_scope() as session:
        result = audit.verify(session)
    if result.ok:
        console.print(f"ok: {result.rows} rows, head {result.head}")
        return
    console.print(f"[red]broken at row {result.first_bad_seq}[/red]: {result.reason}")
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path | None, typer.Option(help="file (default: stdout)")] = None,
) -> None:
    """Every row as JSON lines, oldest first, with its hashes (re-verifiable offline)."""
    from app.db.session import session_scope
    from app.services import audit

    handle = out.open("w") if out else sys.stdout
    with session_scope() as session:
        for row in audit.iter_rows(session):
            handle.write(json.dumps(audit.as_dict(row), sort_keys=True) + "\n")
    if out:
        handle.close()
