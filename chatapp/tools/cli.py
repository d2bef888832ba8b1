"""The ``chatapp`` command: ``serve``, ``ask``, ``doctor`` and ``config``.

- ``chatapp serve`` runs gunicorn with the settings shipped in the package
  (:mod:`chatapp.server.gunicorn_conf`), so it works from any folder and from a wheel.
- ``chatapp ask "..."`` streams one reply to the terminal from a running server.
- ``chatapp doctor URL`` checks a deployment's path to the browser for buffering,
  compression, heartbeats and idle timeouts.
- ``chatapp config`` prints every setting with its default, and ``--check`` validates the
  environment as the server would at start-up.
"""

from __future__ import annotations

import os
import sys

import click

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not 'Name: value'", param_hint="-H/--header")
        headers[name.strip()] = content.strip()
    return headers


_url_option = click.option(
    "--url",
    envvar="CHATAPP_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The chat's base URL, with its prefix if mounted (e.g. https://example.com/assistant). Env: CHATAPP_URL.",
)
_header_option = click.option(
    "-H", "--header", "header", multiple=True, help="Extra request header, e.g. -H 'Cookie: session=...'. Repeatable."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatapp", prog_name="chatapp")
def main() -> None:
    """Stream LLM chat replies from Flask to browsers over Server-Sent Events."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--app", "target", default="chatapp:create_app()", show_default=True, help="The WSGI app to serve, module:name.")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(target: str, gunicorn_args: tuple[str, ...]) -> None:
    """Run gunicorn with chatapp's settings (gevent worker, start-up checks).

    Other arguments go to gunicorn, e.g. chatapp serve --bind 127.0.0.1:9000. Several
    workers (--workers 4) need CHATAPP_REDIS_URL and CHATAPP_SECRET_KEY.
    """
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:chatapp.server.gunicorn_conf", *gunicorn_args, target]
    # exec: gunicorn becomes this process, so signals from systemd or a shell reach it.
    os.execv(sys.executable, argv)


@main.command()
@click.argument("message")
@_url_option
@_header_option
@click.option("--timeout", default=300.0, show_default=True, help="Give up when the reply is silent this long (seconds).")
@click.option("--reasoning/--no-reasoning", "show_reasoning", default=True, show_default=True, help="Show the model's thinking, dimmed, on stderr.")
def ask(message: str, url: str, header: tuple[str, ...], timeout: float, show_reasoning: bool) -> None:
    """Send MESSAGE to a running chatapp and stream the reply here.

    The answer goes to stdout; a reasoning model's thinking goes to stderr (dimmed on a
    terminal), so `chatapp ask ... > answer.txt` keeps only the answer. Exits 1 when the
    reply ends with an error event or the server refuses.
    """
    import httpx

    from .client import APIError, ChatAPI

    failed = False
    with ChatAPI(url, headers=_headers(header)) as api:
        session_id = None
        try:
            session_id = api.create_session()["session_id"]
            api.send(session_id, message)
            thinking = False
            with api.stream(session_id, read_timeout=timeout) as reader:
                for item in reader.items():
                    if item.kind != "event":
                        continue
                    if item.event == "reasoning":
                        if show_reasoning:
                            thinking = True
                            click.echo(click.style(item.json()["text"], dim=True), nl=False, err=True)
                    elif item.event == "token":
                        if thinking:
                            # The thinking ends with its own line before the answer.
                            click.echo(err=True)
                            thinking = False
                        click.echo(item.json()["text"], nl=False)
                    elif item.event == "error":
                        failed = True
                        error = item.json()
                        click.echo(f"\nchatapp: {error['code']}: {error['message']}", err=True)
                    elif item.event == "end":
                        failed = failed or item.json().get("finish_reason") == "error"
                        break
                else:
                    failed = True
                    click.echo(f"\nchatapp: the stream ended before the reply did ({reader.error or 'closed'})", err=True)
            click.echo()
        except APIError as exc:
            raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from None
        except KeyboardInterrupt:
            if session_id:
                api.cancel(session_id)
            click.echo("\n(cancelled)", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # Our reader left (`chatapp ask ... | head`): stop quietly, as Unix tools do.
            if session_id:
                api.cancel(session_id)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (httpx.HTTPError, OSError) as exc:
            raise click.ClickException(f"cannot talk to {url}: {exc}") from None
    if failed:
        sys.exit(1)


@main.command()
@click.argument("url")
@click.option("--idle-seconds", default=60.0, show_default=True, help="How long to hold an idle stream open.")
@click.option("--message", default=None, help="What to ask (a longer reply makes buffering easier to see).")
@_header_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(url: str, idle_seconds: float, message: str | None, header: tuple[str, ...], as_json: bool) -> None:
    """Check that a deployment at URL streams to browsers: no buffering, no compression,
    heartbeats pass, idle streams survive. Exits 0 when fine, 1 on a problem, 2 when the
    checks could not run.
    """
    from .doctor import DEFAULT_MESSAGE, DoctorError, diagnose

    try:
        report = diagnose(url, idle_seconds=idle_seconds, message=message or DEFAULT_MESSAGE, headers=_headers(header))
    except DoctorError as exc:
        click.echo(f"chatapp doctor: {exc}", err=True)
        sys.exit(2)
    click.echo(report.json() if as_json else report.render())
    sys.exit(0 if report.ok else 1)


@main.command("config")
@click.option("--check", is_flag=True, help="Validate the settings in the environment instead, as the server would.")
def config_command(check: bool) -> None:
    """Print every setting: its variable, default and what it does."""
    from ..config import describe, load_server_settings, load_settings
    from ..errors import ConfigError

    if not check:
        click.echo(describe(), nl=False)
        return
    try:
        load_settings({})
        load_server_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("chatapp: the settings in the environment are valid.")
