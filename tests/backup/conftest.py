"""Fixtures for the backup runner: a real S3 server (versitygw) and the runner in its own venv.

The runner needs boto3, whose botocore pins python-dateutil<3 while the kubernetes client in the
dev venv needs >=3; so, like its image (bridge + backup extras, no kubernetes client), it runs in
a venv of its own, built once into ~/.cache/vestige-operator/backup-venv-<hash>/.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.build import cache_root
from tests.s3.server import S3Server

ROOT = Path(__file__).resolve().parents[2]
RUNNER_PATH = ROOT / "images" / "backup"


def _requirements() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"]["backup"])


def runner_venv() -> Path:
    """A venv with the ``backup`` extra's requirements (built once, keyed by them)."""
    reqs = _requirements()
    digest = hashlib.sha256("\n".join([sys.version, *reqs]).encode()).hexdigest()[:12]
    venv = cache_root() / f"backup-venv-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *reqs], check=True)
        (venv / ".complete").write_text("\n".join(reqs))
    return python


@pytest.fixture(scope="session")
def runner_python() -> Path:
    return runner_venv()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "root").start()
    yield server
    server.stop()


def run_runner(
    python: Path,
    args: list[str],
    *,
    env: dict[str, str],
    result_file: Path,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vestige_backup ARGS`` as the pod would (credentials in the environment)."""
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(result_file.parent),
        "PYTHONPATH": str(RUNNER_PATH),
        "VESTIGE_BACKUP_RESULT_FILE": str(result_file),
        **env,
    }
    return subprocess.run(
        [str(python), "-m", "vestige_backup", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
