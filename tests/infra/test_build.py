"""`sam build`: every function of the template built for arm64 by cargo-lambda, no Docker.

Slow on a cold build directory (every function in release mode for aarch64), so it runs when
`LAGO_SAM_BUILD=1`: the test command sets it unless told `LAGO_SAM_BUILD=0`. cargo-lambda and its Zig linker come from the test
venv (tests/requirements.txt); the build reuses `CARGO_TARGET_DIR` when it is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, TEMPLATE, resources, tool

ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183


def functions() -> dict[str, str]:
    """Logical id → binary of every function the template builds with cargo-lambda."""
    return {
        name: res["Metadata"]["BuildProperties"]["Binary"]
        for name, res in resources("AWS::Serverless::Function").items()
        if res.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda"
    }


@pytest.mark.skipif(os.environ.get("LAGO_SAM_BUILD") != "1", reason="set LAGO_SAM_BUILD=1 (make test does by default)")
def test_sam_build_makes_an_arm64_bootstrap_for_every_function(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        # cargo-lambda and python-zig of the venv first on PATH.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "SAM_CLI_TELEMETRY": "0",
    }
    done = subprocess.run(
        [tool("sam"), "build", "--template-file", str(TEMPLATE), "--build-dir", str(build_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    built = functions()
    assert len(built) >= 5, built
    sizes = []
    for logical_id, binary in sorted(built.items()):
        bootstrap = build_dir / logical_id / "bootstrap"
        assert bootstrap.is_file(), f"{logical_id} ({binary}): no bootstrap in {build_dir / logical_id}"
        head = bootstrap.read_bytes()[:20]
        assert head[:4] == ELF_MAGIC, f"{logical_id}: not an ELF binary"
        assert int.from_bytes(head[18:20], "little") == EM_AARCH64, f"{logical_id}: not built for arm64"
        assert os.access(bootstrap, os.X_OK), f"{logical_id}: bootstrap is not executable"
        sizes.append((logical_id, binary, bootstrap.stat().st_size))
    print("\nsam build artifacts (arm64, release):")
    for logical_id, binary, size in sizes:
        print(f"  {logical_id:<26} {binary:<15} {size / 2**20:6.1f} MiB")
