"""Schedules in the fake ARM: v2 model-monitor schedules (``CreateMonitor``) and their retargeting."""

from __future__ import annotations

import copy
import re

from tests.fake_arm_common import CREATED, PROVIDER, Call
from tests.fake_http import Answer, Refusal, Unexpected


class Schedules:
    """Mixed into :class:`tests.fake_arm.FakeArm` (``self`` is the fake, its stores and its clock):
    model-monitor schedules."""

    def add_monitor(self, name: str, endpoint: str, deployment: str, *, short_id: bool = False) -> None:
        """A v2 model-monitor schedule (a ``CreateMonitor`` schedule, REST shape of the schedules API)
        watching ``endpoint/deployment``'s collected data for drift, daily."""
        target = (
            f"azureml:{endpoint}:{deployment}"
            if short_id
            else self.arm_id("onlineEndpoints", endpoint, "deployments", deployment)
        )
        inputs = self.arm_id("data", f"{endpoint}-{deployment}-model_inputs", "versions", "1")
        self.schedules[name] = {
            "id": self.arm_id("schedules", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/schedules",
            "systemData": {"createdAt": CREATED},
            "properties": {
                "displayName": name,
                "isEnabled": True,
                "provisioningState": "Succeeded",
                "tags": {},
                "properties": {},
                "trigger": {
                    "triggerType": "Recurrence",
                    "frequency": "Day",
                    "interval": 1,
                    "schedule": {"hours": [3], "minutes": [0]},
                    "timeZone": "UTC",
                },
                "action": {
                    "actionType": "CreateMonitor",
                    "monitorDefinition": {
                        "computeConfiguration": {
                            "computeType": "ServerlessSpark",
                            "instanceType": "standard_e4s_v3",
                            "runtimeVersion": "3.3",
                            "computeIdentity": {"computeIdentityType": "AmlToken"},
                        },
                        "monitoringTarget": {"deploymentId": target, "taskType": "Regression"},
                        "signals": {
                            "feature-drift": {
                                "signalType": "DataDrift",
                                "productionData": {
                                    "inputDataType": "Rolling",
                                    "jobInputType": "uri_folder",
                                    "uri": inputs,
                                    "windowSize": "P1D",
                                },
                                "referenceData": {
                                    "inputDataType": "Static",
                                    "jobInputType": "mltable",
                                    "uri": self.arm_id("data", "diabetes-training", "versions", "1"),
                                },
                                "metricThresholds": [
                                    {
                                        "dataType": "Numerical",
                                        "metric": "JensenShannonDistance",
                                        "threshold": {"value": 0.1},
                                    }
                                ],
                            }
                        },
                    },
                },
            },
        }

    def _list_schedules(self, call: Call) -> Answer:
        view = call.query.get("listViewType", "EnabledOnly")
        found = [
            s
            for s in self.schedules.values()
            if view == "All" or s["properties"]["isEnabled"] == (view == "EnabledOnly")
        ]
        return 200, {}, {"value": found}

    def _get_schedule(self, call: Call, name: str) -> Answer:
        return 200, {}, self._found(self.schedules.get(name), f"schedule {name}")

    def _put_schedule(self, call: Call, name: str) -> Answer:
        """A schedule PUT replaces the schedule. The monitoring target must be a deployment of an
        endpoint of the workspace."""
        body = copy.deepcopy(call.body or {})
        props = body.get("properties") or {}
        action = props.get("action") or {}
        if action.get("actionType") == "CreateMonitor":
            target = str(((action.get("monitorDefinition") or {}).get("monitoringTarget") or {}).get("deploymentId"))
            match = re.search(r"onlineEndpoints/([^/]+)/deployments/([^/]+)$", target) or re.match(
                r"^azureml:([^:]+):([^:]+)$", target
            )
            if match is None or tuple(match.groups()) not in self.deployments:
                raise Refusal(400, "UserError", f"Monitoring target {target} is not a deployment of this workspace")
        if not props.get("trigger"):
            raise Unexpected("a schedule needs its trigger")
        created = name not in self.schedules
        body.update({"id": self.arm_id("schedules", name), "name": name, "type": f"{PROVIDER}/workspaces/schedules"})
        body["properties"]["provisioningState"] = "Succeeded"
        self.schedules[name] = body
        return (201 if created else 200), {}, body
