"""The chart's alert rules, as rendered, pass ``promtool check rules`` and their unit tests.

``rules_test.yaml`` (``promtool test rules``) feeds each alert synthetic series: it fires on
them, and stays quiet on the series next to them that must not trigger it. promtool is built
from the Go module proxy (tests/tools.py). The rules are rendered with the chart's defaults
(release ``vestige-operator`` in ``vestige-system``: job ``vestige-operator-metrics``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import tools
from tests.monitoring import pack

HERE = Path(__file__).resolve().parent
RULE_TESTS = HERE / "rules_test.yaml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.promtool_binary()), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    return pack.rule_groups(pack.render_pack())


@pytest.fixture
def rules_file(groups: list[dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_promtool_checks_the_rules(rules_file: Path, groups: list[dict[str, Any]]) -> None:
    proc = promtool("check", "rules", rules_file.name, cwd=rules_file.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = sum(len(g["rules"]) for g in groups)
    assert f"SUCCESS: {count} rules found" in proc.stdout + proc.stderr


def test_promtool_rule_unit_tests_pass(rules_file: Path) -> None:
    shutil.copy(RULE_TESTS, rules_file.parent / RULE_TESTS.name)
    proc = promtool("test", "rules", RULE_TESTS.name, cwd=rules_file.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test(groups: list[dict[str, Any]]) -> None:
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested == firing, "each alert needs a test where it fires and one where it does not"
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert quiet == alerts
