"""Fixtures: a moto server with its Step Functions interpreter on, behind the Lambda router.

    moto (127.0.0.1:<moto>)  ── MOTO_PORT=<router> ──►  router (127.0.0.1:<router>)
         ▲                                                 │ POST …/functions/<name>/invocations
         └──────────── every other request ────────────────┘   → the test's handler for <name>

Both run on free loopback ports chosen at start, so the tests run anywhere with the venv and
several runs can share a machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from router import LambdaRouter
from support import ROOT

MOTO_SERVER = ROOT / "scripts" / "moto_server.py"

REGION = "us-east-1"
ACCOUNT = "123456789012"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server not up at {url} after {timeout}s")


@dataclass
class MotoStack:
    moto_url: str
    router: LambdaRouter

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextmanager
def running_stack(log: Path) -> Iterator[MotoStack]:
    """A moto server with its Step Functions interpreter on, behind a started router; moto's
    output goes to `log`. Stops both on exit. (scripts/cost.py runs the pipeline on it too.)"""
    router = LambdaRouter().start()
    moto_port = _free_port()
    moto_url = f"http://127.0.0.1:{moto_port}"
    router.moto_url = moto_url
    env = {
        **os.environ,
        # The interpreter sends its service calls here: to the router.
        "MOTO_PORT": str(router.port),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            # moto's server answering one request at a time (see the script): its backends are
            # not safe under concurrent requests, and the burst tests send many at once.
            [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(moto_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(moto_url, proc)
        config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        req = urllib.request.Request(
            f"{moto_url}/moto-api/config",
            data=json.dumps(config).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=10).close()
        yield MotoStack(moto_url=moto_url, router=router)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        router.stop()


@pytest.fixture(scope="session")
def moto_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    with running_stack(tmp_path_factory.mktemp("moto") / "moto.log") as stack:
        yield stack


@pytest.fixture
def stack(moto_stack: MotoStack) -> Iterator[MotoStack]:
    """The session's moto and router with no Lambda handlers registered yet."""
    moto_stack.router.reset()
    yield moto_stack
    moto_stack.router.reset()
