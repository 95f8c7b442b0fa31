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
from collections.abc import Callable, Iterator

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
def server(cmd: list[str], *, ready: Callable[[], bool], log_path: str,
           timeout: float = 60, env: dict | None = None) -> Iterator[subprocess.Popen]:
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


@contextlib.contextmanager
def gcs_emulator(log_path: str) -> Iterator[int]:
    """gcp-storage-emulator on a free loopback port, with ``STORAGE_EMULATOR_HOST`` set for
    this process (google-cloud-storage, hence Beam's gs:// filesystem, honours it); yields the
    port. Without Google credentials Beam retries ``google.auth.default()`` for ~30 s before
    it connects anonymously; the emulator needs none, so Beam's credential cache starts at
    "none found"."""
    from apache_beam.internal.gcp import auth

    port = free_port()
    env = {"STORAGE_EMULATOR_HOST": f"http://{LOOPBACK}:{port}", "NO_GCE_CHECK": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
    cmd = [console_script("gcp-storage-emulator"), "start", f"--host={LOOPBACK}",
           f"--port={port}", "--in-memory"]
    try:
        with server(cmd, ready=lambda: listening(port), log_path=log_path):
            yield port
    finally:
        auth._Credentials._credentials_init = False
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gcs_client():
    """A google-cloud-storage client for the emulator (anonymous, any project)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())
