"""Azurite, the Azure Storage emulator, started by the test run itself on 127.0.0.1.

The npm package is installed into ``node_modules/`` if it is missing (``make test`` does it first;
a bare ``pytest`` on a fresh clone does it here). Each instance listens on free ports and has its
own account, whose key is made up at start: nothing secret is in the repo. Data lives in a
temporary folder, so an instance can be stopped and started again with its data, as a storage
account that was unreachable for a while comes back with its tables.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AZURITE = REPO / "node_modules" / ".bin" / "azurite"
ACCOUNT = "retraintest"


class AzuriteError(RuntimeError):
    pass


def ensure_installed() -> Path:
    """The azurite executable, installed with npm from package.json (pinned) if it is not there."""
    if AZURITE.exists():
        return AZURITE
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError("npm is not on PATH: install Node.js 18+ (the tests run Azurite from npm)")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not AZURITE.exists():
        raise AzuriteError(f"npm install failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return AZURITE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for Azurite, the local host, a receiver)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """One Azurite process: blob and table endpoints for one made-up account."""

    def __init__(self) -> None:
        self.executable = ensure_installed()
        self.blob_port = free_port()
        self.table_port = free_port()
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.location = Path(tempfile.mkdtemp(prefix="azurite-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.location / "azurite.log"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={self.key};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 60.0) -> Azurite:
        if self.process is not None:
            raise AzuriteError("Azurite is already running")
        args = [
            str(self.executable),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--location",
            str(self.location / "data"),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.blob_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.table_port),
            "--queuePort",
            "0",
        ]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{self.key}"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (_listening(self.blob_port) and _listening(self.table_port)):
            if self.process.poll() is not None:
                self.process = None
                raise AzuriteError(f"Azurite exited at start: {self.log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AzuriteError(f"Azurite did not listen within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the process (its data stays on disk for the next start)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        for port in (self.blob_port, self.table_port):
            deadline = time.monotonic() + 10
            while _listening(port) and time.monotonic() < deadline:
                time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.location, ignore_errors=True)
