"""Stage processes and the temporary Prefect server die with the flow process, however it ends.

The first `guard()` in a process starts `python flows/watchdog.py` (its own session, so a Ctrl-C
to the flow's terminal does not reach it) with a pipe on its stdin. The process writes `+g<pgid>`
when it starts a process group (a stage) or `+p<pid>` for a single process (the temporary server)
and `-...` when it ended. When the pipe closes, because the process exited in any way (SIGKILL
included: the kernel closes it), the watchdog SIGTERMs everything still registered, SIGKILLs what
is left after the grace period, and exits. Run as a script it imports the standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 30.0  # SIGTERM, then SIGKILL this long after (a stage ends its MLflow run KILLED)

_lock = threading.Lock()
_pipe: tuple[int, subprocess.Popen[bytes]] | None = None  # (owner pid, watchdog process)


def _send(line: str) -> None:
    global _pipe
    with _lock:
        if _pipe is None or _pipe[0] != os.getpid():  # none yet, or inherited through a fork
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), str(GRACE_S)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            _pipe = (os.getpid(), proc)
        stdin = _pipe[1].stdin
        assert stdin is not None
        try:
            stdin.write(f"{line}\n".encode())
            stdin.flush()
        except OSError:  # the watchdog is gone; nothing better to do than run unguarded
            pass


def guard(*, pgid: int | None = None, pid: int | None = None) -> None:
    """Kill this process group (or process) if the current process dies before `unguard`."""
    _send(f"+g{pgid}" if pgid is not None else f"+p{pid}")


def unguard(*, pgid: int | None = None, pid: int | None = None) -> None:
    _send(f"-g{pgid}" if pgid is not None else f"-p{pid}")


def _kill(entry: str, sig: int) -> bool:
    """Send `sig` to a registered entry; False when it no longer exists."""
    kind, number = entry[0], int(entry[1:])
    try:
        if kind == "g":
            os.killpg(number, sig)
        else:
            os.kill(number, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _alive(entry: str) -> bool:
    return _kill(entry, 0)


def main(grace_s: float) -> None:
    """Read registrations from stdin until EOF, then end what is still registered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    live: set[str] = set()
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if line[:1] == "+":
            live.add(line[1:])
        elif line[:1] == "-":
            live.discard(line[1:])
    live = {e for e in live if _kill(e, signal.SIGTERM)}
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        time.sleep(0.2)
        live = {e for e in live if _alive(e)}
    for entry in live:
        _kill(entry, signal.SIGKILL)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else GRACE_S)
