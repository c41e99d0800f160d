"""The bridge's replication gauges read from a real Litestream sidecar's control socket (the
one place the lag is measured): up and a small lag while it replicates, down once it is gone."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from pathlib import Path

import httpx
from vestige_bridge.app import create_app
from vestige_bridge.settings import Settings

from tests.continuous.conftest import BUCKET, FLAVOURS, Flavour, MakeSidecar, ingestor
from tests.litestream.replica import replica_path, settings_for, wait_for
from tests.s3.server import S3Server


def _get(app: object, path: str) -> httpx.Response:
    """GET without a token (both paths are public, like the kubelet's probes)."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as http:
            answer = await http.get(path)
            answer.raise_for_status()
            return answer

    return asyncio.run(get())


def _gauges(app: object) -> dict[str, float]:
    text = _get(app, "/metrics").text
    return {
        name: float(value)
        for name, value in re.findall(r"^(vestige_bridge_replication_\w+) (\S+)$", text, re.M)
    }


def test_the_bridge_reports_the_lag(tmp_path: Path, s3: S3Server, replicator: MakeSidecar) -> None:
    flavour = FLAVOURS["standin-v3"]
    volume = tmp_path / "agent"
    socket = tmp_path / "run" / "litestream.sock"
    socket.parent.mkdir()
    settings = settings_for(s3, BUCKET, replica_path("tenant-a", "lag"), socket=str(socket))
    server = flavour.start(volume, tmp_path)
    server.initialize()
    sidecar = replicator(
        Flavour.db(volume),
        settings,
        {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    )
    app = create_app(
        Settings.model_validate({"VESTIGE_ALLOW_ANONYMOUS": True, "VESTIGE_REPLICATION_SOCKET": str(socket)})
    )
    try:
        assert _gauges(app)["vestige_bridge_replication_up"] == 0  # no sidecar yet
        before = _get(app, "/replication").json()
        assert before["enabled"] is True and before["last_sync_at"] is None, before
        assert "did not answer" in before["error"], before
        sidecar.start()
        ing = ingestor(server, flavour)
        assert ing.ingest(1)
        wait_for(lambda: _gauges(app)["vestige_bridge_replication_up"] == 1, 60, "the socket answering")
        time.sleep(2)
        gauges = _gauges(app)
        print(f"gauges while replicating: {gauges}")
        assert 0 <= gauges["vestige_bridge_replication_lag_seconds"] < 5
        assert abs(gauges["vestige_bridge_replication_last_sync_timestamp_seconds"] - time.time()) < 5
        position = _get(app, "/replication").json()  # what the operator's ReplicationHealthy reads
        print(f"/replication while replicating: {position}")
        assert position["error"] is None and 0 <= position["lag_seconds"] < 5, position
        synced = datetime.fromisoformat(position["last_sync_at"].replace("Z", "+00:00"))
        assert abs(synced.timestamp() - time.time()) < 5, position
    finally:
        sidecar.kill()
        server.close()
    assert _gauges(app)["vestige_bridge_replication_up"] == 0
    after = _get(app, "/replication").json()
    assert after["last_sync_at"] is None and after["lag_seconds"] is None and after["error"], after


def test_a_pod_without_the_sidecar_says_replication_is_off() -> None:
    app = create_app(Settings.model_validate({"VESTIGE_ALLOW_ANONYMOUS": True}))
    assert _get(app, "/replication").json() == {
        "enabled": False,
        "last_sync_at": None,
        "lag_seconds": None,
        "error": None,
    }
