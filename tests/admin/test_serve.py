"""`dp2bridge serve` as a real process (`python -m bridge`): it says where it listens, stops
cleanly on SIGTERM, and explains a port that is taken instead of printing a traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from bridge.config import Config
from tests.conftest import write_config


def start(config: Config) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(config.path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=config.home)


def test_serve_prints_its_listeners_and_stops_on_sigterm(sqlite_home: Config) -> None:
    proc = start(sqlite_home)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert lines[-1:] == ["ready"], (lines, proc.stderr.read() if proc.poll() is not None else "")
        roles = [line.split()[1] for line in lines if line.startswith("listening:")]
        assert roles == ["smtp-starttls", "smtp-implicit-tls", "imap-starttls", "imap-implicit-tls", "https-api"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close() if proc.stdout else None
        proc.stderr.close() if proc.stderr else None


def test_serve_explains_a_port_that_is_taken(sqlite_home: Config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(sqlite_home.home, smtp={"listen_starttls": [f"127.0.0.1:{port}"]})
        proc = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(sqlite_home.path)],
                              capture_output=True, text=True, timeout=60, cwd=sqlite_home.home)
    assert proc.returncode == 1
    assert "cannot serve" in proc.stderr and str(port) in proc.stderr
    assert "listen_" in proc.stderr and "Traceback" not in proc.stderr
