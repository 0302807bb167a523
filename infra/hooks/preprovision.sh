#!/bin/sh
# azd preprovision hook (azure.yaml): runs before every `azd provision` (and so every `azd up`).
#  1. Validates the policy (RETRAIN_POLICY_PATH, default policy.yaml) as the app's start-up does, and
#     passes the endpoints of models whose rollout health reads logs
#     (models.<m>.deploy.rollout.health.source: logs) as RETRAIN_TRAFFIC_LOG_ENDPOINTS, for their
#     AmlOnlineEndpointTrafficLog diagnostic settings.
#  2. Finds the workspace's Event Grid system topic, if it has one (Event Grid allows one per
#     source: from the portal's Events blade, another team, another environment of this service),
#     and passes its name, resource group and current state (region, identities, tags): the
#     deployment then adds this environment's identity and subscriptions to it and keeps the rest.
#     RETRAIN_SYSTEM_TOPIC_CREATED records, the first time, whether this environment created it.
set -eu
HOOK=preprovision
HOOKS=$(cd "$(dirname "$0")" && pwd)
. "$HOOKS/lib.sh"

require AZUREML_WORKSPACE_NAME AZUREML_RESOURCE_GROUP
SUBSCRIPTION=${AZUREML_SUBSCRIPTION_ID:-${AZURE_SUBSCRIPTION_ID:-}}
[ -n "$SUBSCRIPTION" ] || SUBSCRIPTION=$(az account show --query id -o tsv) || die "az is not signed in: run az login"

# 1. The policy.
POLICY=${RETRAIN_POLICY_PATH:-policy.yaml}
PYTHON=$(project_python)
check_policy "$PYTHON" "$POLICY"
ENDPOINTS=$("$PYTHON" "$HOOKS/hooklib.py" logs-endpoints "$POLICY")
azd env set RETRAIN_TRAFFIC_LOG_ENDPOINTS "$ENDPOINTS"
[ -z "$ENDPOINTS" ] || say "traffic log diagnostic settings for the endpoints: $ENDPOINTS"

# 2. The workspace's system topic.
WORKSPACE_ID=$(az resource show --subscription "$SUBSCRIPTION" -g "$AZUREML_RESOURCE_GROUP" \
  -n "$AZUREML_WORKSPACE_NAME" --resource-type Microsoft.MachineLearningServices/workspaces \
  --query id -o tsv) || die "workspace $AZUREML_WORKSPACE_NAME not found in resource group $AZUREML_RESOURCE_GROUP (subscription $SUBSCRIPTION); check AZUREML_WORKSPACE_NAME, AZUREML_RESOURCE_GROUP and AZUREML_SUBSCRIPTION_ID"
TOPICS=$(az eventgrid system-topic list --subscription "$SUBSCRIPTION" -o json) \
  || die "cannot list the Event Grid system topics of subscription $SUBSCRIPTION (az eventgrid system-topic list)"
# RETRAIN_TOPIC_IDENTITY_ID (an output of earlier provisions): ours, which the deployment adds itself.
FOUND=$(printf '%s' "$TOPICS" | "$PYTHON" "$HOOKS/hooklib.py" topic "$WORKSPACE_ID" "${RETRAIN_TOPIC_IDENTITY_ID:-}")

if [ -n "$FOUND" ]; then
  NAME=$(printf '%s\n' "$FOUND" | sed -n 1p)
  GROUP=$(printf '%s\n' "$FOUND" | sed -n 2p)
  STATE=$(printf '%s\n' "$FOUND" | sed -n 3p)
  say "the workspace has the system topic $NAME (resource group $GROUP): adding this environment's identity and subscriptions to it, keeping its identities and tags"
  azd env set RETRAIN_SYSTEM_TOPIC_NAME "$NAME"
  azd env set RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP "$GROUP"
  azd env set RETRAIN_SYSTEM_TOPIC_STATE "$STATE"
  [ -n "${RETRAIN_SYSTEM_TOPIC_CREATED:-}" ] || azd env set RETRAIN_SYSTEM_TOPIC_CREATED false
else
  say "the workspace has no system topic yet: this deployment creates one"
  azd env set RETRAIN_SYSTEM_TOPIC_NAME ""
  azd env set RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP ""
  azd env set RETRAIN_SYSTEM_TOPIC_STATE ""
  azd env set RETRAIN_SYSTEM_TOPIC_CREATED true
fi
