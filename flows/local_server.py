"""The Prefect servers this project starts itself: closed to other origins, never left behind.

Prefect's local server answers any origin (`access-control-allow-origin: *`) without CSRF
protection or auth, so a web page could POST `create_flow_run` to it. Every server the project
starts (`make serve`: flows/deploy.py `start_server`; the temporary one of `python -m
flows.retrain`) gets `hardened_settings`: CSRF protection on (Prefect's client and UI fetch the
token themselves) and CORS limited to the server's own origin. On a machine shared with other
users set PREFECT_SERVER_API_AUTH_STRING (and PREFECT_API_AUTH_STRING for clients):
docs/orchestration.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from flows import watchdog

# Prefect waits 20 s for its temporary server by default; on a busy 2-core machine (a CI run's
# installs beside it) `python -m flows.retrain` failed with "Timed out while attempting to connect
# to ephemeral Prefect API server" before any stage ran. A night should wait, not fail.
STARTUP_TIMEOUT_S = 120


def hardened_settings(origin: str) -> dict[str, str]:
    """Server environment: CSRF protection on, CORS for `origin` (http://127.0.0.1:PORT) only."""
    return {
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": origin,
        "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
            "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
        ),  # no network to send it to
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guard_temporary_server() -> None:
    """Register Prefect's temporary server of this process (if any) with flows/watchdog.py.

    Prefect starts it on the first API call when PREFECT_API_URL is unset and stops it at exit;
    registered, it also ends when this process is SIGKILLed or SIGTERMed.
    """
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):  # Prefect keeps no public list
        proc = server.server_process
        if proc is not None and proc.poll() is None:
            watchdog.guard(pid=proc.pid)


def harden_temporary_server() -> None:
    """Before Prefect starts its temporary server: CSRF on, no cross-origin caller (no UI)."""
    for key, value in hardened_settings("http://127.0.0.1").items():
        os.environ.setdefault(key, value)


@contextmanager
def patient_temporary_server() -> Iterator[None]:
    """Inside: Prefect waits up to STARTUP_TIMEOUT_S for its temporary server to answer, unless
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS is set (Prefect reads its settings once, so
    a context, not the environment)."""
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout,
    )
    from prefect.settings import temporary_settings

    if timeout.name in os.environ:
        yield
        return
    with temporary_settings(updates={timeout: STARTUP_TIMEOUT_S}):
        yield
