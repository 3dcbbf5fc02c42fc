"""The command line: `billfold serve`, `billfold keys create`, `billfold verify`, ..."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from billfold.config import Settings

app = typer.Typer(
    help="billfold: billing for open platforms.", no_args_is_help=True, add_completion=False
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
admins_app = typer.Typer(help="Operator logins for the console.", no_args_is_help=True)
app.add_typer(admins_app, name="admins")
console = Console()
err = Console(stderr=True)


def _context(migrate: bool = True):  # type: ignore[no-untyped-def]
    from billfold.core.context import build_context

    ctx = build_context(Settings(), migrate=migrate)
    if migrate:
        _repair(ctx)
    return ctx


def _repair(ctx) -> None:  # type: ignore[no-untyped-def]
    """Data repairs that a schema migration cannot do in SQL, because they go through
    the ledger (append-only, hash-chained): each is idempotent and cheap when done."""
    from billfold.invoicing import reopen_paid_from_credit

    done = reopen_paid_from_credit(ctx)
    if done.get("invoices_reopened"):
        err.print(
            f"billfold: reopened {done['invoices_reopened']} postpaid invoice(s) that had "
            "been paid from credit; they are open again with what they ask for"
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (use the machine's cores).")
    ] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM).", exists=True)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).", exists=True)
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies whose X-Forwarded-* headers are trusted (comma-separated)."),
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker", help="Also charge the usage stream here (with BILLFOLD_NATS_URL)."
        ),
    ] = False,
) -> None:
    """Runs the API (creating or upgrading the database schema first)."""
    import uvicorn

    from billfold.api.app import create_app, tune_interpreter
    from billfold.core.metrics import share_between_processes
    from billfold.core.stream import refuse_sqlite
    from billfold.logging import configure

    settings = Settings()
    configure(settings.log_level, json=settings.log_json)
    if (tls_cert is None) != (tls_key is None):
        err.print("billfold: --tls-cert and --tls-key go together")
        raise typer.Exit(2)
    if settings.secret_key is None and not settings.resolved_database_url().startswith("sqlite"):
        # Every instance must encrypt and decrypt with the same key; a key made on one
        # machine's disk would make the others unable to read what it wrote.
        err.print("billfold: set BILLFOLD_SECRET_KEY: every server sharing this database needs it")
        raise typer.Exit(2)
    _refuse(refuse_sqlite(settings))
    if worker and not settings.nats_url:
        err.print("billfold: --worker charges the usage stream: set BILLFOLD_NATS_URL")
        raise typer.Exit(2)
    ctx = _context()
    scheme = "https" if tls_cert else "http"
    err.print(f"billfold: database {_redacted(ctx.db.url)}")
    err.print(
        f"billfold: listening on {scheme}://{host}:{port}  "
        "(the console at /, API docs at /docs, OpenAPI at /openapi.json)"
    )
    options = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "ssl_certfile": str(tls_cert) if tls_cert else None,
        "ssl_keyfile": str(tls_key) if tls_key else None,
        "proxy_headers": forwarded_allow_ips is not None,
        "forwarded_allow_ips": forwarded_allow_ips,
    }
    background = None
    if worker:
        from billfold.workers.stream import Background

        background = Background(ctx, settings)
        background.start()
        err.print(f"billfold: charging stream {settings.stream_name} here too")
    try:
        if workers == 1:
            server_app = create_app(ctx, housekeeping=True)
            tune_interpreter(ctx.db.url)
            uvicorn.run(server_app, **options)  # type: ignore[arg-type]
        else:
            ctx.db.dispose()
            # The workers' metrics in one folder, so that a scrape of any adds up all.
            share_between_processes(settings.home)
            uvicorn.run(
                "billfold.api.app:app_from_environment",
                factory=True,
                workers=workers,
                **options,  # type: ignore[arg-type]
            )
    finally:
        if background is not None:
            background.stop()
        ctx.db.dispose()


@app.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's Prometheus metrics on this port (no auth)."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address for --metrics-port (keep it private).")
    ] = "127.0.0.1",
) -> None:
    """Charges the usage stream (BILLFOLD_NATS_URL) until SIGTERM: any number of workers,
    on any machines, share its shards over one PostgreSQL."""
    from billfold.core.stream import refuse_sqlite
    from billfold.logging import configure
    from billfold.workers.stream import run_worker

    settings = Settings()
    configure(settings.log_level, json=settings.log_json)
    if not settings.nats_url:
        err.print("billfold: set BILLFOLD_NATS_URL: the worker charges the usage stream")
        raise typer.Exit(2)
    _refuse(refuse_sqlite(settings))
    ctx = _context()
    err.print(
        f"billfold: worker on {_redacted(ctx.db.url)}, stream {settings.stream_name} "
        f"({settings.stream_shards} shards)"
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
        err.print(f"billfold: worker metrics at http://{metrics_host}:{metrics_port}/metrics")
    try:
        run_worker(ctx, settings)
    finally:
        ctx.db.dispose()


def _refuse(reason: str | None) -> None:
    """Ends the command with exit status 2 and the reason, if there is one."""
    if reason:
        err.print(f"billfold: {reason}")
        raise typer.Exit(2)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def migrate() -> None:
    """Creates or upgrades the database schema."""
    ctx = _context()
    err.print(f"billfold: schema is current on {_redacted(ctx.db.url)}")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, provider or user.")],
    provider: Annotated[str | None, typer.Option(help="Provider id, for a provider key.")] = None,
    user: Annotated[str | None, typer.Option(help="User id, for a user key.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Prints a new API key. This is the only time the key is shown."""
    from billfold.core.access import SYSTEM, Role
    from billfold.core.keys import create_key
    from billfold.domain.errors import BillfoldError

    try:
        role_value = Role(role)
    except ValueError:
        err.print("role must be admin, provider or user")
        raise typer.Exit(2) from None
    ctx = _context()
    try:
        key, secret = ctx.run(
            create_key, SYSTEM, role=role_value, provider_id=provider, user_id=user, name=name
        )
    except BillfoldError as error:
        err.print(f"billfold: {error.message}")
        raise typer.Exit(2) from None
    err.print(f"billfold: created {key.role} key {key.id}; keep it safe, it is not shown again")
    print(secret)


@app.command()
def quote(
    plan: Annotated[
        Path,
        typer.Option(
            help="A PLAN as JSON (see docs/API.md).", exists=True, dir_okay=False, readable=True
        ),
    ],
    usage: Annotated[
        Path,
        typer.Option(
            help="USAGE as JSON: quantities and/or events.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
) -> None:
    """Prints the quote JSON for that usage under that plan. Needs no database."""
    from billfold.core.exact_json import loads_exact
    from billfold.domain.errors import BillfoldError
    from billfold.domain.pricing import parse_plan, parse_usage
    from billfold.domain.pricing import quote as price

    try:
        plan_data = loads_exact(plan.read_bytes())
        usage_data = loads_exact(usage.read_bytes())
    except ValueError as error:
        err.print(f"billfold: not valid JSON: {error}")
        raise typer.Exit(2) from None
    try:
        result = price(parse_plan(plan_data), parse_usage(usage_data))
    except BillfoldError as error:
        err.print(f"billfold: {error.message}")
        raise typer.Exit(2) from None
    print(json.dumps(result.to_dict(), indent=2))


@admins_app.command("create")
def admins_create(
    email: Annotated[str, typer.Option(help="The operator's email address.")],
    password: Annotated[
        str | None,
        typer.Option(
            envvar="BILLFOLD_ADMIN_PASSWORD",
            help="Asked for when not given (or set in BILLFOLD_ADMIN_PASSWORD).",
        ),
    ] = None,
) -> None:
    """An operator login, with the TOTP second factor its logins need; prints the secret."""
    from billfold import identity
    from billfold.domain.errors import BillfoldError

    secret = password
    if secret is None:
        secret = typer.prompt("password (10 characters or more)", hide_input=True,
                              confirmation_prompt=True)  # fmt: skip
    ctx = _context()
    try:
        made = ctx.run(identity.create_admin, email=email, password=secret)
    except BillfoldError as error:
        err.print(f"billfold: {error.message}")
        raise typer.Exit(2) from None
    finally:
        ctx.db.dispose()
    err.print(f"billfold: created operator login {made.login_id} for {email}")
    err.print("add this secret to an authenticator app; every login asks for its code:")
    print(made.totp.secret)
    err.print(made.totp.uri)


@app.command("demo")
def demo_command() -> None:
    """Loads a demo platform (providers, plans, 50 users, 60 days of usage) and prints
    its logins; a database that already has it is left alone."""
    import time

    from billfold import demo

    started = time.monotonic()
    with Progress(
        TextColumn("living through the demo's {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            loaded = demo.load(Settings(), progress)
        except RuntimeError as error:
            err.print(f"billfold: {error}")
            raise typer.Exit(0) from None
    table = Table(title=f"billfold demo: {len(loaded.providers)} providers, "
                  f"{len(loaded.users)} users, {loaded.events:,} events, "
                  f"in {time.monotonic() - started:.1f} s")  # fmt: skip
    table.add_column("log in as")
    table.add_column("email")
    table.add_column("password")
    for who, email, password in loaded.logins:
        table.add_row(who, email, password)
    console.print(table)
    console.print(
        "The operator's login also asks for a code from an authenticator app with this "
        f"secret: [bold]{loaded.admin_totp}[/bold]; or print the current code with:"
    )
    print(f"  .venv/bin/python -c \"import pyotp; print(pyotp.TOTP('{loaded.admin_totp}').now())\"")


@app.command("verify")
def verify_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Checks every ledger invariant; exits non-zero if any is broken."""
    from billfold.core.access import SYSTEM
    from billfold.ledger.verify import verify

    ctx = _context()
    with Progress(
        TextColumn("verifying the journal"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("journal", total=None)
        report = ctx.read(
            verify,
            SYSTEM,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "transfers": report.transfers,
                    "postings": report.postings,
                    "accounts": report.accounts,
                    "checks": [
                        {
                            "name": c.name,
                            "ok": c.ok,
                            "problem_count": c.problem_count,
                            "problems": c.problems,
                        }
                        for c in report.checks
                    ],
                },
                indent=2,
            )
        )
    else:
        table = Table(
            title=f"ledger: {report.transfers} transfers, {report.postings} postings, "
            f"{report.accounts} accounts"
        )
        table.add_column("check")
        table.add_column("result")
        table.add_column("what it means")
        for check in report.checks:
            result = "[green]ok[/green]" if check.ok else f"[red]{check.problem_count} broken[/red]"
            table.add_row(check.name, result, check.description)
        console.print(table)
        for check in report.checks:
            for problem in check.problems:
                console.print(f"[red]{check.name}[/red]: {problem}")
        console.print(
            "[green]all invariants hold[/green]" if report.ok else "[red]the ledger is broken[/red]"
        )
    ctx.db.dispose()
    if not report.ok:
        raise typer.Exit(1)


@app.command("bill-run")
def bill_run_command(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Bill what fell due up to this time (ISO 8601); default now."),
    ] = None,
) -> None:
    """Runs renewals, invoice finalization, dunning and hold expiry; safe to rerun."""
    from billfold.domain.pricing import parse_time
    from billfold.invoicing.billing import bill_run

    ctx = _context()
    moment = parse_time(as_of, "as_of") if as_of else None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        totals = bill_run(ctx, as_of=moment, progress=progress)
    print(json.dumps(totals, indent=2, sort_keys=True))
    ctx.db.dispose()


@app.command("reconcile")
def reconcile_command(
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Proves that statements, invoices, gateway payments and the ledger agree for a
    month; names every difference and exits non-zero if there is one."""
    from billfold.payments import reconcile

    ctx = _context()
    with Progress(
        TextColumn("reconciling {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        bar.add_task(period, total=None)
        report = ctx.read(reconcile, period)
    ctx.db.dispose()
    if as_json:
        print(
            json.dumps(
                {
                    "period": report.period,
                    "ok": report.ok,
                    "checks": report.checks,
                    "differences": [d.__dict__ for d in report.differences],
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"reconciliation of {period}: {report.checks} checks")
        for name in ("check", "subject", "expected (ledger)", "found"):
            table.add_column(name)
        for d in report.differences:
            table.add_row(d.check, d.subject, d.expected, d.found)
        if report.differences:
            console.print(table)
        console.print(
            "[green]statements, invoices and the ledger agree[/green]"
            if report.ok
            else f"[red]{len(report.differences)} differences[/red]"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    kind: Annotated[str, typer.Argument(help="usage, charges, invoices or statements")],
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    out: Annotated[Path | None, typer.Option("--out", help="A file; default stdout.")] = None,
) -> None:
    """Writes a month's usage, charges, invoices or statements as CSV."""
    from billfold.core.access import SYSTEM
    from billfold.settlement.exports import export_csv

    ctx = _context()
    chunks = export_csv(ctx, SYSTEM, kind, period)
    if out is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
    else:
        with (
            out.open("w", encoding="utf-8", newline="") as handle,
            Progress(
                TextColumn(f"exporting {kind} {period}"), TimeElapsedColumn(), console=err
            ) as bar,
        ):
            bar.add_task(kind, total=None)
            for chunk in chunks:
                handle.write(chunk)
    ctx.db.dispose()


@app.command("rotate-secret")
def rotate_secret(
    print_new_key: Annotated[
        bool, typer.Option(help="Only print a new random key to rotate to, and exit.")
    ] = False,
) -> None:
    """Re-encrypts personal data and secrets under the current BILLFOLD_SECRET_KEY.

    Set BILLFOLD_SECRET_KEY to the new key and BILLFOLD_PREVIOUS_SECRET_KEYS to the old
    ones (a JSON list), restart the servers, then run this; afterwards the old keys can
    be dropped.
    """
    import base64
    import secrets

    from billfold.core.rotation import rotate

    if print_new_key:
        print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        return
    ctx = _context()
    with Progress(
        TextColumn("re-encrypting {task.description}"),
        TextColumn("{task.completed} values"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def advance(table: str, done: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=None)
            bar.update(tasks[table], completed=done)

        moved = rotate(ctx, advance)
    ctx.db.dispose()
    for table, count in moved.items():
        err.print(f"billfold: {table}: {count} rows re-encrypted under key {ctx.cipher.key_id}")


def main() -> None:
    app(prog_name="billfold")


if __name__ == "__main__":
    main()
