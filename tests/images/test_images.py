"""The images built here (tests/cluster/images.py), run for real in a throwaway containerd.

Each image runs as a container the way the operator's pod runs it: uid 1000 (the image's USER;
the bases through ``setpriv``), a read-only root filesystem, /tmp a tmpfs, no capabilities,
seccomp; the Vestige and stand-in containers with the very command, args and environment
``children.py`` renders. Built from the cache (``~/.cache/vestige-operator/images``; a cold
build takes several minutes); skipped only where buildah/debootstrap (build) or
containerd/ctr/runc (run) are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import render_vestige_container
from vestige_operator.vocabulary import Images, Owner

from tests.cluster import images

pytestmark = pytest.mark.timeout(3600)

OWNER = Owner(name="agent-a", namespace="team", uid="0f6a1c1e-0000-4000-8000-000000000001")
TOKEN = "t0ken-for-the-image-test"
PROJECT_IMAGES = ("bridge", "operator", "standin", *(f"vestige-{v}" for v in images.VESTIGE_VERSIONS))


@pytest.fixture(scope="module")
def built() -> images.ImageSet:
    if missing := images.missing_tools():
        pytest.skip(f"cannot build images here: {', '.join(missing)} not installed")
    return images.ensure_images()


@pytest.fixture(scope="module")
def containerd(built: images.ImageSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if missing := [t for t in ("containerd", "ctr", "runc") if shutil.which(t) is None]:
        pytest.skip(f"cannot run images here: {', '.join(missing)} not installed")
    base = os.environ.get("VESTIGE_CLUSTER_STATE")
    state = Path(base) / "images-containerd" if base else tmp_path_factory.mktemp("ctd")
    with images.scratch_containerd(state) as address:
        images.import_into(address, images=built)
        yield address


CTR = ("ctr", "--address")


def ctr(address: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(
        ["ctr", "--address", address, "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def run_flags(env: dict[str, str] | None = None, mounts: list[str] | None = None) -> list[str]:
    """A pod's container as the operator renders it: read-only root, /tmp an emptyDir (tmpfs
    here), seccomp; no network but loopback (a fresh network namespace)."""
    flags = ["--read-only", "--seccomp"]
    flags += ["--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev:mode=1777"]
    for mount in mounts or []:
        flags += ["--mount", mount]
    for name, value in (env or {}).items():
        flags += ["--env", f"{name}={value}"]
    return flags


def run(
    address: str,
    ref: str,
    *cmd: str,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (the image's entrypoint is replaced) to completion."""
    name = f"img-{uuid.uuid4().hex[:10]}"
    return ctr(address, "run", "--rm", *run_flags(env, mounts), ref, name, *cmd, stdin=subprocess.DEVNULL)


class Running:
    """A container started with its stdin held open (as ``stdin: true`` does in a pod), or with
    ``null_io`` on /dev/null (a pod's container without ``stdin: true``: EOF at once)."""

    def __init__(
        self,
        address: str,
        ref: str,
        cmd: list[str],
        env: dict[str, str],
        mounts: list[str],
        null_io: bool = False,
    ) -> None:
        self.address = address
        self.name = f"img-{uuid.uuid4().hex[:10]}"
        self.proc = subprocess.Popen(
            [
                *CTR,
                address,
                "--namespace",
                "k8s.io",
                "run",
                "--rm",
                *(["--null-io"] if null_io else []),
                *run_flags(env, mounts),
                ref,
                self.name,
                *cmd,
            ],
            stdin=subprocess.DEVNULL if null_io else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return ctr(self.address, "tasks", "exec", "--exec-id", uuid.uuid4().hex[:10], self.name, *cmd)

    def wait_until_serving(self, *probe: str, attempts: int = 120) -> subprocess.CompletedProcess[str]:
        """Retry ``probe`` (an exec) until it succeeds: the server inside takes a moment."""
        result = None
        for _ in range(attempts):
            if self.proc.poll() is not None:
                break
            result = self.exec(*probe)
            if result.returncode == 0:
                return result
            time.sleep(0.5)
        output = self.stop()
        raise AssertionError(f"never served: {result and result.stdout + result.stderr}\n{output}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            ctr(self.address, "tasks", "kill", "--signal", "SIGKILL", self.name)
        self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


def data_dir(tmp_path: Path) -> tuple[Path, str]:
    """A host directory as the pod's PVC: owned by uid/gid 1000 (what fsGroup arranges)."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)
    data.chmod(0o770)
    return data, f"type=bind,src={data},dst=/data,options=rbind:rw"


def rendered(generation: str, ref: str) -> tuple[list[str], dict[str, str]]:
    """The Vestige container's command+args and environment exactly as the operator renders
    them (the token from the Secret substituted)."""
    spec = VestigeMemorySpec.model_validate({"vestige": {"generation": generation}})
    container = render_vestige_container(
        OWNER, spec, Images(vestige=ref, bridge="unused", litestream="example.org/litestream:0.5.18")
    )
    env = {e["name"]: e.get("value", TOKEN) for e in container["env"]}
    return [*container["command"], *container["args"]], env


def image_config(image: images.Image) -> dict[str, Any]:
    """The OCI config of an archive (config.User, Entrypoint, Env, ...)."""
    with tarfile.open(image.archive) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert member is not None
            return json.load(member)

        manifest = blob(images.archive_digest(image.archive))
        return dict(blob(manifest["config"]["digest"])["config"])


def require(built: images.ImageSet, key: str) -> images.Image:
    if key not in built.images:
        pytest.skip(f"{key} not built: {images.vestige_unavailable()}")
    return built.images[key]


# -- the cache -------------------------------------------------------------------------------


def test_a_warm_build_reuses_every_archive(built: images.ImageSet) -> None:
    before = {key: (image.archive, image.archive.stat().st_mtime_ns) for key, image in built.images.items()}
    versions = tuple(v for v in images.VESTIGE_VERSIONS if f"vestige-{v}" in before)
    again = images.ensure_images(vestige_versions=versions)
    assert {key: (i.archive, i.archive.stat().st_mtime_ns) for key, i in again.images.items()} == before
    assert again.refs == built.refs
    for image in built.images.values():
        assert image.archive.parent == images.images_dir()
        assert image.stamp[:16] in image.archive.name


def test_builds_leave_no_working_containers_behind(built: images.ImageSet) -> None:
    """Every build (a cold one included: tests/run.sh builds before pytest) removes its buildah
    working containers; one left behind stays mounted and pins its image."""
    left = subprocess.run(
        [
            "buildah",
            *images._buildah_storage(),
            "containers",
            "--all",
            "--format",
            "{{.ContainerName}} {{.ImageName}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert [line for line in left if line.strip()] == []


def test_refs_name_local_images_tagged_by_content(built: images.ImageSet) -> None:
    refs = built.refs
    assert refs.debian == "localhost/debian:bookworm-slim"
    assert refs.python == "localhost/python:3.11-slim-bookworm"
    assert refs.pause == "localhost/pause:3.10"
    assert refs.bridge == f"localhost/vestige-bridge:dev-{built.images['bridge'].stamp[:12]}"
    assert refs.operator == f"localhost/vestige-operator:dev-{built.images['operator'].stamp[:12]}"
    assert refs.standin == f"localhost/vestige-standin:3.1.1-{built.images['standin'].stamp[:12]}"
    for version, ref in refs.vestige.items():
        assert ref == f"localhost/vestige:{version}-{built.images[f'vestige-{version}'].stamp[:12]}"
    assert len(set(refs.all())) == len(refs.all())


def test_import_skips_what_containerd_already_has(built: images.ImageSet, containerd: str) -> None:
    present = images.containerd_images(containerd)
    for image in built.images.values():
        assert present[image.ref] == images.archive_digest(image.archive)
    assert images.import_into(containerd, images=built) == []


# -- every image: uid 1000, read-only root, no capabilities -----------------------------------


@pytest.mark.parametrize("key", PROJECT_IMAGES)
def test_project_images_run_as_uid_1000_on_a_read_only_root(
    built: images.ImageSet, containerd: str, key: str
) -> None:
    image = require(built, key)
    assert image_config(image).get("User") == "1000:1000"
    script = "id -u; id -g; grep CapEff /proc/self/status; touch /probe 2>&1; touch /tmp/probe && echo tmp-ok"
    result = run(containerd, image.ref, "sh", "-c", script)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["1000", "1000"], result.stdout + result.stderr
    assert lines[2].split() == ["CapEff:", "0000000000000000"]
    assert "Read-only file system" in lines[3]
    assert lines[4] == "tmp-ok"


@pytest.mark.parametrize("key", ["debian", "python"])
def test_bases_run_as_uid_1000_on_a_read_only_root(built: images.ImageSet, containerd: str, key: str) -> None:
    """The bases keep root as their user (like Docker Hub's); a pod's runAsUser makes it 1000."""
    check = "id -u; touch /probe 2>&1; ls /var/lib/apt/lists | wc -l; ls /usr/share/man | wc -l"
    if key == "python":  # `python -m venv` and pip work for an unprivileged user
        check += "; python -m venv /tmp/venv && /tmp/venv/bin/pip --version >/dev/null && echo venv-ok"
    setpriv = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--inh-caps=-all"]
    result = run(containerd, built.images[key].ref, *setpriv, "sh", "-c", check)
    lines = result.stdout.splitlines()
    assert lines[0] == "1000", result.stdout + result.stderr
    assert "Read-only file system" in lines[1]
    assert lines[2:4] == ["0", "0"], "trimmed: no apt lists, no man pages"
    if key == "python":
        assert lines[4] == "venv-ok"


def test_pause_is_a_static_sleep_infinity(built: images.ImageSet, containerd: str) -> None:
    pause = built.images["pause"]
    config = image_config(pause)
    assert config["Entrypoint"] == ["/bin/sleep", "infinity"]
    # An image FROM scratch: busybox runs, so it is static (there is no libc to load).
    result = run(containerd, pause.ref, "/bin/sh", "-c", "id -u; ls /; ls /lib 2>&1 | head -1")
    assert result.stdout.splitlines()[0] == "65535", result.stdout + result.stderr
    assert result.stdout.split()[1] == "bin"


def test_bridge_image_imports_the_app(built: images.ImageSet, containerd: str) -> None:
    result = run(containerd, built.refs.bridge, "python", "-c", "import vestige_bridge.app; print('ok')")
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_operator_image_runs_the_operator_cli(built: images.ImageSet, containerd: str) -> None:
    result = run(containerd, built.refs.operator, "python", "-m", "vestige_operator", "crd")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kind: CustomResourceDefinition" in result.stdout


# -- the Vestige containers, as the operator renders them -------------------------------------

MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2024-11-05",
        "capabilities": {},
        "clientInfo": {"name": "image-test", "version": "0"},
    },
}


def test_v3_standin_serves_the_operators_v3_command(
    built: images.ImageSet, containerd: str, tmp_path: Path
) -> None:
    """The operator's v3 command, env and data volume (the stand-in keeps its store in
    VESTIGE_DATA_DIR on it, like 3.x)."""
    cmd, env = rendered("v3", built.refs.standin)
    data, mount = data_dir(tmp_path)
    assert cmd[0] == "vestige-mcp"
    probe = (
        "import json, os, urllib.request as u\n"
        "def post(headers):\n"
        "    body = os.environ['INIT'].encode()\n"
        "    h = {'Content-Type': 'application/json', 'Accept': 'application/json, text/event-stream'}\n"
        "    req = u.Request('http://127.0.0.1:3100/mcp', body, {**h, **headers})\n"
        "    try:\n"
        "        with u.urlopen(req, timeout=5) as r: return r.status, r.read().decode()\n"
        "    except u.HTTPError as e: return e.code, ''\n"
        "status, _ = post({})\n"
        "ok, body = post({'Authorization': 'Bearer ' + os.environ['VESTIGE_AUTH_TOKEN']})\n"
        "print(status, ok, json.loads(body)['result']['serverInfo']['version'])\n"
    )
    box = Running(containerd, built.refs.standin, cmd, {**env, "INIT": json.dumps(MCP_INITIALIZE)}, [mount])
    try:
        result = box.wait_until_serving("python", "-c", probe)
        assert result.stdout.split() == ["401", "200", "3.1.1"]
    finally:
        box.stop()
    assert (data / "vestige" / "vestige.db").stat().st_uid == 1000


def test_v3_standin_exits_when_its_stdin_is_at_eof(
    built: images.ImageSet, containerd: str, tmp_path: Path
) -> None:
    """Like Vestige 3.x (also with --http): a container without `stdin: true` ends at once."""
    cmd, env = rendered("v3", built.refs.standin)
    _, mount = data_dir(tmp_path)
    box = Running(containerd, built.refs.standin, cmd, env, [mount], null_io=True)
    try:
        assert box.proc.wait(timeout=120) == 0
    finally:
        box.stop()


@pytest.mark.parametrize("version", images.VESTIGE_VERSIONS)
def test_v1_image_has_mcp_proxy_on_path_and_a_runnable_vestige(
    built: images.ImageSet, containerd: str, version: str
) -> None:
    image = require(built, f"vestige-{version}")
    script = "command -v mcp-proxy; command -v vestige-mcp; ldd /usr/local/bin/vestige-mcp; vestige-mcp -h"
    result = run(containerd, image.ref, "sh", "-c", script)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["/opt/mcp-proxy/bin/mcp-proxy", "/usr/local/bin/vestige-mcp"], result.stdout
    assert "libc.so.6" in result.stdout and "not found" not in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    doc = run(
        containerd,
        image.ref,
        "sh",
        "-c",
        "cat /usr/share/doc/vestige/VESTIGE_COMMIT /usr/share/doc/vestige/LICENSE",
    )
    commit, _, licence = doc.stdout.partition("\n")
    assert f"vendored vestige-{version}.tar.gz" in commit and len(commit.split()[0]) == 40
    assert "licen" in licence.lower(), doc.stdout + doc.stderr


@pytest.mark.parametrize("version", images.VESTIGE_VERSIONS)
def test_v1_vestige_answers_mcp_over_stdio_and_exits_at_eof(
    built: images.ImageSet, containerd: str, version: str, tmp_path: Path
) -> None:
    image = require(built, f"vestige-{version}")
    data, mount = data_dir(tmp_path)
    (data / "vestige").mkdir()  # 1.x/2.x open the database without creating its directory
    os.chown(data / "vestige", 1000, 1000)
    lines = [
        MCP_INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    # The requests through a pipe inside the container: its end is Vestige's stdin EOF, after
    # which Vestige must exit (`ctr run` does not pass its own stdin's EOF on).
    requests = "".join(json.dumps(line) + "\n" for line in lines)
    cmd = ["sh", "-c", 'printf "%s" "$MCP_REQUESTS" | vestige-mcp --data-dir /data/vestige/vestige.db']
    env = {"HOME": "/tmp", "MCP_REQUESTS": requests}
    result = run(containerd, image.ref, *cmd, env=env, mounts=[mount])
    assert result.returncode == 0, result.stdout + result.stderr
    answers = {m["id"]: m for m in map(json.loads, result.stdout.splitlines()) if "id" in m}
    assert answers[1]["result"]["serverInfo"]["version"] == version, result.stdout + result.stderr
    assert "search" in {tool["name"] for tool in answers[2]["result"]["tools"]}
    owned = [(p.stat().st_uid, p.stat().st_gid) for p in (data / "vestige").iterdir()]
    assert owned and set(owned) == {(1000, 1000)}


@pytest.mark.parametrize("stdin", ["open", "at-eof"])
@pytest.mark.parametrize("version", images.VESTIGE_VERSIONS)
def test_v1_image_serves_the_operators_v1_command(
    built: images.ImageSet, containerd: str, version: str, stdin: str, tmp_path: Path
) -> None:
    """mcp-proxy -> real Vestige, started with exactly the operator's command/args/env, answers
    MCP Streamable HTTP on 127.0.0.1:3100 inside the container's network namespace; also with
    the container's stdin at EOF (mcp-proxy gives Vestige a pipe of its own)."""
    image = require(built, f"vestige-{version}")
    cmd, env = rendered("v1", image.ref)
    assert cmd[0] == "mcp-proxy"
    if "mkdir" not in " ".join(cmd):
        # Seen here: 1.x/2.x open /data/vestige/vestige.db without creating /data/vestige, which
        # a fresh volume lacks; the operator's v1 command creates it on branch vestige-real.
        pytest.xfail("this tree's v1 command does not create the database directory on a fresh volume")
    _, mount = data_dir(tmp_path)
    client = (
        "import anyio\n"
        "from mcp import ClientSession\n"
        "from mcp.client.streamable_http import streamablehttp_client\n"
        "async def main():\n"
        "    async with streamablehttp_client('http://127.0.0.1:3100/mcp') as (r, w, _):\n"
        "        async with ClientSession(r, w) as s:\n"
        "            init = await s.initialize()\n"
        "            tools = await s.list_tools()\n"
        "            print(init.serverInfo.version, len(tools.tools))\n"
        "anyio.run(main)\n"
    )
    box = Running(containerd, image.ref, cmd, env, [mount], null_io=stdin == "at-eof")
    try:
        result = box.wait_until_serving("/opt/mcp-proxy/bin/python", "-c", client)
        served_version, tool_count = result.stdout.split()
        assert served_version == version
        assert int(tool_count) > 0
    finally:
        box.stop()
