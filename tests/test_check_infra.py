"""scripts/check_infra.py fails when it must: a file that does not parse, a failed or hidden check.

The pure parts run here in the app's venv; the end-to-end test runs the script with the infra venv
(.venv-infra: checkov and pycep), which `make check-infra` creates.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO, load_module

INFRA_PYTHON = REPO / ".venv-infra" / "bin" / "python"
LOG = "[bicep] start to parse 3 files\n[bicep] successfully parsed 3 files\n"
VALID = """param location string = resourceGroup().location

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-check'
  location: location
}
"""
BROKEN = """resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-check'
  location: {
"""


check_infra = load_module("check_infra", REPO / "scripts" / "check_infra.py")


def report(**results: Sequence[object]) -> dict[str, object]:
    base: dict[str, Sequence[object]] = {
        "passed_checks": [],
        "failed_checks": [],
        "skipped_checks": [],
        "parsing_errors": [],
    }
    base.update(results)
    return {"check_type": "bicep", "results": base, "summary": {"parsing_errors": len(base["parsing_errors"])}}


def test_a_clean_report_of_every_file_passes() -> None:
    assert check_infra.evaluate(report(), LOG, expected_files=3) == []


def test_a_parsing_error_reported_by_checkov_fails() -> None:
    problems = check_infra.evaluate(report(parsing_errors=["/x/infra/broken.bicep"]), LOG, expected_files=3)
    assert problems == ["/x/infra/broken.bicep: checkov could not parse it"]


def test_a_failed_check_fails_and_names_the_resource() -> None:
    failed = {"check_id": "CKV_AZURE_3", "check_name": "https only", "file_path": "/m.bicep", "resource": "sa"}
    (problem,) = check_infra.evaluate(report(failed_checks=[failed]), LOG, expected_files=3)
    assert problem.startswith("/m.bicep: sa: CKV_AZURE_3 failed")


def test_a_check_skipped_inline_instead_of_in_the_config_fails() -> None:
    skipped = {"check_id": "CKV_AZURE_35", "check_name": "deny", "file_path": "/s.bicep", "resource": "sa"}
    (problem,) = check_infra.evaluate(report(skipped_checks=[skipped]), LOG, expected_files=3)
    assert "inline comment" in problem


def test_checkov_scanning_fewer_files_than_infra_holds_fails() -> None:
    problems = check_infra.evaluate(report(), LOG, expected_files=4)
    assert problems == [
        "checkov found 3 Bicep file(s), infra/ holds 4",
        "checkov parsed 3 of 4 Bicep file(s)",
    ]


def test_no_report_or_no_parse_count_fails() -> None:
    assert check_infra.evaluate(None, "", expected_files=1) == [
        "checkov printed no report",
        "checkov's log does not say how many Bicep files it parsed (was LOG_LEVEL=INFO set?)",
    ]


def test_a_config_skip_without_a_reason_fails() -> None:
    skips = check_infra.config_skips(
        "framework:\n  - bicep\nskip-check:\n  - CKV_AZURE_1  # why\n  - CKV_AZURE_2\nquiet: true\n"
    )
    assert skips == {"CKV_AZURE_1": "why", "CKV_AZURE_2": ""}
    assert check_infra.skips_without_reason(skips, "ck.yaml") == [
        "ck.yaml: skip-check CKV_AZURE_2: no reason; write it on the same line after '#'"
    ]


def test_every_skip_in_the_repo_config_has_its_reason() -> None:
    skips = check_infra.config_skips((REPO / ".checkov.yaml").read_text(encoding="utf-8"))
    assert skips, ".checkov.yaml lists no skips: was the skip-check key renamed?"
    assert check_infra.skips_without_reason(skips) == []


@pytest.mark.slow
def test_a_bicep_file_that_does_not_parse_fails_the_check(tmp_path: Path) -> None:
    if not INFRA_PYTHON.exists():
        pytest.skip("no .venv-infra: `make check-infra` creates it (checkov and pycep live there)")
    infra = tmp_path / "infra"
    (infra / "modules").mkdir(parents=True)
    (infra / "main.bicep").write_text(VALID, encoding="utf-8")
    (infra / "modules" / "broken.bicep").write_text(BROKEN, encoding="utf-8")
    config = tmp_path / ".checkov.yaml"
    config.write_text("framework:\n  - bicep\n", encoding="utf-8")
    done = subprocess.run(
        [str(INFRA_PYTHON), str(REPO / "scripts" / "check_infra.py"), "--infra", str(infra), "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert any("broken.bicep: does not parse (pycep)" in line for line in lines), done.stderr
    assert any("broken.bicep: checkov could not parse it" in line for line in lines), done.stderr
    assert any("checkov parsed 1 of 2 Bicep file(s)" in line for line in lines), done.stderr
    assert not any("main.bicep" in line for line in lines), done.stderr


def test_every_action_in_the_workflows_is_pinned_to_a_commit_with_its_tag_named() -> None:
    """A tag can be moved to other code; a commit cannot. zizmor checks the same offline, but only
    as strictly as .github/zizmor.yml lets it: an exception there (a ref-pin policy) is refused too."""
    import re

    import yaml

    unpinned = []
    for workflow in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        for line in workflow.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if match and not match[1].startswith("./"):
                pinned = re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match[1])
                if not pinned or not re.fullmatch(r"\s*#\s*v\d+(\.\d+)*", match[2]):
                    unpinned.append(f"{workflow.name}: {line.strip()}")
    assert unpinned == [], "pin these to a full commit SHA with '# vX.Y.Z' after it"
    config = yaml.safe_load((REPO / ".github" / "zizmor.yml").read_text(encoding="utf-8"))
    assert config["rules"]["unpinned-uses"]["config"]["policies"] == {"*": "hash-pin"}
