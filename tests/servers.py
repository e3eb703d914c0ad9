"""Starting a real server for a test: a free loopback port, and waiting until it answers."""

import os
import signal
import socket
import subprocess
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, timeout_s: float, what: str) -> None:
    """Poll `url` until it answers 200; fail the test if `proc` dies or time runs out."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, f"{what} exited during start-up"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{what} did not start within {timeout_s:.0f} s")


def stop_group(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """Stop a server started with start_new_session=True and every process it started."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
