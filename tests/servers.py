"""Local stand-ins for the cloud, started by tests: every server binds 127.0.0.1 only, is
waited for with a deadline, and is stopped by its PID (SIGTERM, then SIGKILL)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Iterator, List, Optional

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@contextlib.contextmanager
def server(cmd: List[str], *, ready: Callable[[], bool], log_path: str,
           timeout: float = 60, env: Optional[dict] = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until the block ends; ``ready`` says when it serves."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}; see {log_path}")
            if time.time() > deadline:
                raise TimeoutError(f"{cmd[0]} did not start in {timeout} s; see {log_path}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)


def console_script(name: str) -> str:
    """The path of an installed console script (beside this Python)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else name
