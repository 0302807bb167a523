"""The azd hooks as azure.yaml runs them: every hook in both shells, what they write is what the deployment
reads (and back), and no native command in the PowerShell twins fails unnoticed."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from tests.hooks_world import HOOKS

NATIVE = re.compile(r"(?:^|[\s({;|=])(?:az|azd|python3?)\s|&\s*[\"$]")


def test_azure_yaml_runs_every_hook_in_both_shells_and_each_file_exists() -> None:
    import yaml

    hooks = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))["hooks"]
    assert set(hooks) == {"preprovision", "predeploy", "postdeploy", "predown"}
    for name, hook in hooks.items():
        assert hook["posix"] == {"shell": "sh", "run": f"./infra/hooks/{name}.sh", "continueOnError": False}
        assert hook["windows"] == {"shell": "pwsh", "run": f"./infra/hooks/{name}.ps1", "continueOnError": False}
        assert (HOOKS / f"{name}.sh").is_file() and (HOOKS / f"{name}.ps1").is_file()


def test_what_the_hooks_write_is_what_the_deployment_reads_and_what_they_read_it_writes() -> None:
    """preprovision's `azd env set` names reach main.bicep through main.parameters.json; postdeploy
    reads the deployment's outputs (azd writes them into the environment)."""
    import re

    from tests.bicep import bicep

    parameters = (REPO / "infra" / "main.parameters.json").read_text(encoding="utf-8")
    consumed = set(re.findall(r"\$\{([A-Z0-9_]+)", parameters))
    hook = (HOOKS / "preprovision.sh").read_text(encoding="utf-8")
    written = set(re.findall(r"(?m)^[^\"'\n]*\bazd env set ([A-Z0-9_]+)", hook))  # commands, not messages
    assert {"RETRAIN_SYSTEM_TOPIC_STATE", "RETRAIN_TRAFFIC_LOG_ENDPOINTS"} <= written
    assert written - {"RETRAIN_SYSTEM_TOPIC_CREATED"} <= consumed  # CREATED is a note for removal
    assert "RETRAIN_EVENT_SUBSCRIPTIONS" in consumed
    outputs = set(bicep("main.bicep")["outputs"])
    postdeploy = (HOOKS / "postdeploy.sh").read_text(encoding="utf-8")
    match = re.search(r"^require (.+)$", postdeploy, re.MULTILINE)
    assert match
    required = set(match[1].split())
    assert required - {"AZURE_SUBSCRIPTION_ID"} <= outputs  # azd itself keeps AZURE_SUBSCRIPTION_ID
    assert {"RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP", "RETRAIN_EVENT_SUBSCRIPTION_NAMES"} <= outputs


def unchecked_native_calls(script: str) -> list[str]:
    """Lines of a .ps1 that run a native command (az, azd, python, & $exe) without a $LASTEXITCODE
    check on the same or the next line: PowerShell does not stop on a native command's failure."""
    logical = re.sub(r"`\r?\n\s*", " ", script).splitlines()  # a trailing backtick continues the line
    lines = []
    for line in logical:
        # String contents are not commands ('... run azd up ...'); a comment is not code.
        code = re.sub(r'"[^"]*"', '""', re.sub(r"'[^']*'", "''", line))
        lines.append(code.split("#", 1)[0].rstrip())
    unchecked = []
    for i, line in enumerate(lines):
        if not NATIVE.search(line) or line.lstrip().startswith(("function ", "Write-Error")):
            continue
        following = next((later for later in lines[i + 1 :] if later.strip()), "")
        if "$LASTEXITCODE" not in line and "$LASTEXITCODE" not in following:
            unchecked.append(logical[i].strip())
    return unchecked


def test_the_static_check_finds_a_native_call_whose_failure_would_be_ignored() -> None:
    script = "azd env set A b\n$x = az resource show --ids $id\nif ($LASTEXITCODE -ne 0) { Fail 'x' }\n"
    assert unchecked_native_calls(script) == ["azd env set A b"]
    continued = "$x = az resource show `\n    --ids $id\nif ($LASTEXITCODE -ne 0) { Fail 'x' }\n"
    assert unchecked_native_calls(continued) == []
    assert unchecked_native_calls("$found = @($t | & $python hooklib.py topic $id)\n") != []


@pytest.mark.parametrize("script", sorted(p.name for p in HOOKS.glob("*.ps1")))
def test_every_native_command_in_the_powershell_hooks_is_checked(script: str) -> None:
    assert unchecked_native_calls((HOOKS / script).read_text(encoding="utf-8")) == []
