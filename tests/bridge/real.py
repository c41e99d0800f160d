"""The real Vestige (1.3.0, 2.0.0; built by tests.vestige) behind PyPI mcp-proxy, in the v1 pod's shape.

The command line and environment are the operator's own (`render_vestige_container` for a
`generation: v1` VestigeMemory), with the pod's paths mapped into the test's tmp dir: the data
volume `/data` -> `<tmp>/data`, the emptyDir `/tmp` (HOME) -> `<tmp>/home`, port 3100 -> a free
port, `mcp-proxy` -> the cached venv's, `vestige-mcp` -> the cached build. So a change of the pod
shape (e.g. where backups land) is what these tests exercise. Vestige's dashboard (1.x/2.x start
one on 127.0.0.1:3927) gets a free loopback port per instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bridge.conftest import CallLog, Proc, Upstream, base_env, free_port

REAL_VERSIONS = ("1.3.0", "2.0.0")


def binary(version: str) -> Path:
    """The built `vestige-mcp` for `version`; skips (saying why) where the sources are not vendored."""
    from tests.vestige import build

    if build.vendor_dir() is None:
        pytest.skip(build.missing_reason())
    try:
        return build.ensure(version)
    except build.BuildError as exc:
        pytest.fail(f"cannot build the real Vestige {version}: {exc}")


@dataclass
class RealUpstream(Upstream):
    """A real Vestige behind mcp-proxy; `data` is its data volume, `home` its (emptyDir) HOME."""

    version: str = ""
    data: Path = Path()
    home: Path = Path()
    port: int = 0


@dataclass
class PodShape:
    """The v1 vestige container's argv and env, mapped onto local paths."""

    argv: list[str]
    env: dict[str, str]
    data: Path
    home: Path
    port: int


def pod_shape(tmp: Path, proxy: Path, vestige: Path, port: int | None = None) -> PodShape:
    from vestige_operator.api import VestigeMemorySpec
    from vestige_operator.children import render_vestige_container
    from vestige_operator.vocabulary import DATA_MOUNT, TMP_DIR, VESTIGE_PORT, Images, Owner

    spec = VestigeMemorySpec.model_validate({"vestige": {"generation": "v1"}})
    container = render_vestige_container(
        Owner(name="agent-a", namespace="test", uid="u"),
        spec,
        Images(vestige="v", bridge="b", litestream="example.org/litestream:0.5.18"),
    )
    data, home, port = tmp / "data", tmp / "home", port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)

    def local(value: str) -> str:
        for pod_path, here in ((DATA_MOUNT, data), (TMP_DIR, home)):
            if value == pod_path or value.startswith(pod_path + "/"):
                return str(here) + value[len(pod_path) :]
        return value

    exe = {"mcp-proxy": str(proxy), "vestige-mcp": str(vestige)}
    argv = [exe.get(a, local(a)) for a in [*container["command"], *container["args"]]]
    argv = [str(port) if a == str(VESTIGE_PORT) else a for a in argv]
    env = {e["name"]: local(e["value"]) for e in container["env"] if "value" in e}
    env["VESTIGE_DASHBOARD_PORT"] = str(free_port())
    env.setdefault("RUST_LOG", "warn")
    return PodShape(argv, env, data, home, port)


def start_real(
    tmp: Path, proxy: Path, version: str, name: str = "real", port: int | None = None
) -> RealUpstream:
    """Real Vestige `version` behind mcp-proxy on 127.0.0.1 (as the v1 pod runs it)."""
    shape = pod_shape(tmp, proxy, binary(version), port)
    # the pod's HOME is the emptyDir; everything else of the test environment is kept
    env = base_env(**shape.env)
    proc = Proc(name, shape.argv, env, tmp / f"{name}.log", shape.port).start().wait_port()
    base = f"http://127.0.0.1:{shape.port}"
    return RealUpstream(
        "v1",
        f"{base}/mcp",
        CallLog(tmp / f"{name}-calls.jsonl"),
        [proc],
        sse_url=f"{base}/sse",
        version=version,
        data=shape.data,
        home=shape.home,
        port=shape.port,
    )


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return out
    for child in children:
        out += [child, *descendants(child)]
    return out


def vestige_pids(gateway_pid: int) -> list[int]:
    """The vestige-mcp processes under mcp-proxy (in the pod's shape, below its `sh`)."""
    out = []
    for pid in descendants(gateway_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("vestige-mcp"):
                out.append(pid)
        except OSError:
            continue
    return out
