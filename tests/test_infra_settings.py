"""Infra and code agree on the function app: the settings the code reads are the ones the Bicep and the local
settings give (Flex Consumption's and identity-based storage's included), the package keeps what the
worker needs, and the sign-in and job-name key parameters reach the app.

The Bicep is read with pycep (the parser checkov uses), so these tests see the same structure the
scanner does. They run offline; `make check-infra` scans the same files with checkov.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from function_app.settings import SETTINGS
from tests.bicep import INFRA, app_functions, bicep, modules, variable
from tests.conftest import REPO

# App settings that Flex Consumption replaces with functionAppConfig (or that would bring a key back).
FLEX_REJECTS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",
}


def app_setting_names() -> set[str]:
    """Names of every app setting the Bicep gives the function app."""
    main_settings = variable("main.bicep", "appSettings")
    host_settings = variable("modules/functionapp.bicep", "hostSettings")
    return {name.strip("'") for name in set(main_settings) | set(host_settings)}  # pycep keeps a quoted key's quotes


def binding_settings() -> set[str]:
    """App settings the app's bindings name as %NAME% (e.g. the reconciler's schedule), found by indexing main."""
    code = (
        "import importlib, json\n"
        "main = importlib.import_module('main')\n"
        "print(json.dumps([b for f in main.app.get_functions() for b in f.get_raw_bindings()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return {name for raw in json.loads(done.stdout) for name in re.findall(r"%([A-Za-z0-9_]+)%", raw)}


def test_every_setting_a_binding_names_is_a_setting_infra_and_local_settings_give() -> None:
    named = binding_settings()
    assert "RETRAIN_RECONCILE_SCHEDULE" in named
    local = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    azure = {s.name for s in SETTINGS if s.azure}
    assert sorted(named - azure) == [] and sorted(named - app_setting_names()) == []
    assert sorted(named - set(local)) == []


def test_every_setting_azure_needs_is_an_app_setting_in_the_bicep() -> None:
    missing = sorted(s.name for s in SETTINGS if s.azure and s.name not in app_setting_names())
    assert missing == [], f"add these to appSettings in infra/main.bicep: {missing}"


def test_the_bicep_sets_no_service_setting_the_code_does_not_read() -> None:
    known = {s.name for s in SETTINGS}
    ours = {n for n in app_setting_names() if n.startswith(("RETRAIN_", "AZUREML_"))}
    assert sorted(ours - known) == [], "a RETRAIN_/AZUREML_ app setting that SETTINGS does not list is a typo"


def test_the_service_settings_reach_the_function_app() -> None:
    """main.bicep's appSettings go to the module, which merges them over the host settings into the site."""
    assert bicep("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"] == "appSettings"
    merged = variable("modules/functionapp.bicep", "settings")["function"]
    assert merged["type"] == "union"
    assert list(merged["parameters"].values()) == ["hostSettings", "appSettings"]
    site = bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    loop = site["properties"]["siteConfig"]["appSettings"]["loop_type"]
    assert loop["detail"]["object_name"] == "settings"


def test_app_settings_are_what_flex_consumption_and_identity_based_storage_expect() -> None:
    names = app_setting_names()
    assert sorted(names & FLEX_REJECTS) == []
    host = variable("modules/functionapp.bicep", "hostSettings")
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId"} <= set(host)
    assert host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    local = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    assert host["PYTHON_SCRIPT_FILE_NAME"] == local["PYTHON_SCRIPT_FILE_NAME"] == "main.py"
    site = bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert bicep("modules/functionapp.bicep")["parameters"]["pythonVersion"]["default"] == "3.11"


def test_the_service_runs_against_azure_in_azure() -> None:
    settings = variable("main.bicep", "appSettings")
    assert settings["RETRAIN_LEDGER"] == "table"
    assert settings["RETRAIN_BACKEND"] == "retrainBackend"
    assert bicep("main.bicep")["parameters"]["retrainBackend"]["default"] == "azureml"
    assert bicep("main.bicep")["parameters"]["policyPath"]["default"] == "policy.yaml"


def test_the_event_grid_webhook_route_is_disabled_in_azure_unless_enabled() -> None:
    """The subscriptions use the trigger; POST /api/events is off through the host's
    AzureWebJobs.<function>.Disabled setting, keyed by the function name the app registers."""
    functions = app_functions()
    routes = {b.get("route"): name for name, bindings in functions.items() for b in bindings if b.get("route")}
    settings = {name.strip("'"): value for name, value in variable("main.bicep", "appSettings").items()}
    webhook = routes["events"]
    assert settings[f"AzureWebJobs.{webhook}.Disabled"] == {
        "operator": {"type": "conditional", "operands": {"condition": "enableEventsWebhook", "true_value": "false", "false_value": "true"}}
    }  # fmt: skip
    assert bicep("main.bicep")["parameters"]["enableEventsWebhook"]["default"] is False
    # Action groups post to /api/alerts: that one stays enabled.
    assert not any(k.startswith("AzureWebJobs.") and k != f"AzureWebJobs.{webhook}.Disabled" for k in settings)
    assert "alerts" in routes


def test_location_is_limited_to_regions_that_offer_flex_consumption() -> None:
    location = bicep("main.bicep")["parameters"]["location"]
    allowed = next(d["argument"] for d in location["decorators"] if d["type"] == "allowed")
    assert {"swedencentral", "eastus", "westeurope", "uksouth", "australiaeast"} <= set(allowed)
    # Regions without Flex Consumption in Microsoft's template list, and its canary region.
    assert not {"westindia", "eastus2euap", "chinaeast2", "brazilsoutheast"} & set(allowed)
    assert len(allowed) == len(set(allowed)) and allowed == sorted(allowed)


def test_every_setting_is_in_the_local_settings_example() -> None:
    values = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    missing = sorted(s.name for s in SETTINGS if s.name not in values)
    assert missing == [], f"add these to local.settings.json.example: {missing}"


def test_azd_deploys_to_the_app_bicep_tags_and_main_parameters_are_all_supplied() -> None:
    project = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    (service_name, service), *others = project["services"].items()
    assert others == []
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert variable("main.bicep", "serviceName") == service_name
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = bicep("main.bicep")["parameters"]
    assert set(supplied) <= set(declared)
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(supplied)


@pytest.mark.parametrize("path", ["host.json", "main.py", "requirements.txt"])
def test_the_function_package_keeps_what_the_worker_needs(path: str) -> None:
    ignored = [
        line.strip() for line in (REPO / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert (REPO / path).is_file()
    assert path not in ignored


def test_host_json_loads_the_extension_bundle_flex_consumption_requires() -> None:
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")


EMPTY_CLIENT_ID = {"function": {"type": "empty", "parameters": {"item_to_test": "authClientId"}}}


def test_sign_in_is_an_azd_parameter_that_every_provision_writes_and_the_app_setting_follows() -> None:
    """App settings are replaced whole on every provision: a sign-in set up by hand, and the
    RETRAIN_APP_SERVICE_AUTH=true beside it, were lost on the next one. Both follow authClientId."""
    from function_app.settings import _bool

    settings = variable("main.bicep", "appSettings")
    assert settings["RETRAIN_APP_SERVICE_AUTH"] == {
        "operator": {
            "type": "conditional",
            "operands": {"condition": EMPTY_CLIENT_ID, "true_value": "false", "false_value": "true"},
        }
    }
    assert (_bool("true"), _bool("false")) == (True, False)  # what the code makes of the two values
    assert settings["RETRAIN_OPERATOR_ROLE"] == "operatorRole"
    declared = bicep("main.bicep")["parameters"]
    assert declared["authClientId"]["default"] == "" and declared["operatorRole"]["default"] == "Retrain.Operator"
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert supplied["authClientId"]["value"] == "${RETRAIN_AUTH_CLIENT_ID=}"
    assert supplied["authIssuer"]["value"] == "${RETRAIN_AUTH_ISSUER=}"
    assert supplied["operatorRole"]["value"] == "${RETRAIN_OPERATOR_ROLE=Retrain.Operator}"
    params = modules()["functionApp"]["params"]
    assert (params["authClientId"], params["authIssuer"]) == ("authClientId", "authIssuer")

    module = bicep("modules/functionapp.bicep")
    assert module["variables"]["signIn"]["value"] == {
        "operator": {"type": "not", "operands": {"bool_value": EMPTY_CLIENT_ID}}
    }
    auth = module["resources"]["authSettings"]
    assert auth["type"] == "Microsoft.Web/sites/config" and "condition" not in auth["config"]  # written even when off
    config = auth["config"]
    assert (config["parent"], config["name"]) == ("functionApp", "authsettingsV2")
    properties = config["properties"]
    assert properties["platform"] == {"enabled": "signIn"}
    # Event Grid, action groups and /api/health call without a token; the app refuses manual
    # requests without a principal holding the role, from the headers App Service sets.
    assert properties["globalValidation"] == {
        "requireAuthentication": False,
        "unauthenticatedClientAction": "AllowAnonymous",
    }
    entra = properties["identityProviders"]["azureActiveDirectory"]["operator"]["operands"]
    assert entra["condition"] == "signIn" and entra["false_value"] == {"enabled": False}
    assert entra["true_value"]["registration"] == {"clientId": "authClientId", "openIdIssuer": "issuer"}
    assert "api://${authClientId}" in entra["true_value"]["validation"]["allowedAudiences"]


def test_the_sign_in_configuration_holds_no_secret_and_names_no_secret_setting() -> None:
    text = (INFRA / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    assert "clientSecret" not in json.dumps(bicep("modules/functionapp.bicep")["resources"]["authSettings"])
    assert "clientSecret" not in text and "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET" not in json.dumps(
        variable("main.bicep", "appSettings")
    )


def test_the_job_name_key_is_a_secure_parameter_the_hook_generates_and_the_app_setting_carries() -> None:
    """RETRAIN_JOB_NAME_KEY (job names no workspace user can predict): generated by preprovision into
    the azd environment, passed through main.parameters.json to a @secure() parameter, set as the app
    setting, and never shown in the deployment history (the module's settings parameter is secure)."""
    param = bicep("main.bicep")["parameters"]["jobNameKey"]
    kinds = {d["type"]: d.get("argument") for d in param["decorators"]}
    assert "secure" in kinds and kinds["min_length"] == 32 and param["default"] is None
    assert variable("main.bicep", "appSettings")["RETRAIN_JOB_NAME_KEY"] == "jobNameKey"
    parameters = json.loads((REPO / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["jobNameKey"] == {"value": "${RETRAIN_JOB_NAME_KEY}"}
    module = bicep("modules/functionapp.bicep")["parameters"]["appSettings"]
    assert any(d["type"] == "secure" for d in module["decorators"])
    for hook in ("preprovision.sh", "preprovision.ps1"):
        text = (REPO / "infra" / "hooks" / hook).read_text(encoding="utf-8")
        assert "RETRAIN_JOB_NAME_KEY" in text and "token_hex(32)" in text, hook
    setting = next(s for s in SETTINGS if s.name == "RETRAIN_JOB_NAME_KEY")
    assert setting.azure and setting.default is None
