#!/bin/sh
# azd preprovision hook (azure.yaml): runs before every `azd provision` (and so every `azd up`).
#  1. Validates the policy (RETRAIN_POLICY_PATH, default policy.yaml) as the app's start-up does, and
#     passes the endpoints of models whose rollout health reads logs
#     (models.<m>.deploy.rollout.health.source: logs) as RETRAIN_TRAFFIC_LOG_ENDPOINTS, for their
#     AmlOnlineEndpointTrafficLog diagnostic settings; and the storage account and container/prefix pairs
#     the models' retrain.on.data.blobs name as RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID and
#     RETRAIN_NEW_DATA_PREFIXES, for its BlobCreated subscriptions (one account; none when they name several).
#  2. Refuses a workspace with public network access disabled: the app (Flex Consumption, no virtual
#     network here) could not reach its API. RETRAIN_ALLOW_PRIVATE_WORKSPACE=true if you connected
#     the app to the workspace's network yourself.
#  3. Makes sure Microsoft.EventGrid is registered in the workspace's subscription (registers it, or
#     stops with the command to run): listing system topics and creating one need it.
#  4. Finds the workspace's Event Grid system topic, if it has one (Event Grid allows one per
#     source: from the portal's Events blade, another team, another environment of this service),
#     and passes its name, resource group and current state (region, identities, tags): the
#     deployment then adds the topic's system-assigned identity (which dead-letters) and this
#     environment's subscriptions, and keeps the rest. A user-assigned identity the topic lists
#     that no longer exists (a deleted environment's) is dropped, since a PUT naming it fails; a
#     topic with more user-assigned identities than Event Grid allows stops here with what to do.
#     RETRAIN_SYSTEM_TOPIC_CREATED records, the first time, whether this environment created it.
#  5. Generates RETRAIN_JOB_NAME_KEY once per environment (64 random hex digits, never printed): the
#     secret the app names its retraining jobs with, so that no workspace user can predict the name of
#     the next one and create it first. Kept when it is set: a new key would not find the jobs of
#     retrains in progress (docs/security.md).
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
NEW_DATA=$("$PYTHON" "$HOOKS/hooklib.py" new-data "$POLICY")
azd env set RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID "$(printf '%s\n' "$NEW_DATA" | sed -n 1p)"
azd env set RETRAIN_NEW_DATA_PREFIXES "$(printf '%s\n' "$NEW_DATA" | sed -n 2p)"

# 2. The workspace, and whether the service can reach it.
WORKSPACE_ID=$(az resource show --subscription "$SUBSCRIPTION" -g "$AZUREML_RESOURCE_GROUP" \
  -n "$AZUREML_WORKSPACE_NAME" --resource-type Microsoft.MachineLearningServices/workspaces \
  --query id -o tsv) || die "workspace $AZUREML_WORKSPACE_NAME not found in resource group $AZUREML_RESOURCE_GROUP (subscription $SUBSCRIPTION); check AZUREML_WORKSPACE_NAME, AZUREML_RESOURCE_GROUP and AZUREML_SUBSCRIPTION_ID"
ACCESS=$(az resource show --ids "$WORKSPACE_ID" --query properties.publicNetworkAccess -o tsv) \
  || die "cannot read the workspace $AZUREML_WORKSPACE_NAME (az resource show --ids $WORKSPACE_ID)"
if [ "$ACCESS" = "Disabled" ]; then
  if [ "${RETRAIN_ALLOW_PRIVATE_WORKSPACE:-false}" = "true" ]; then
    say "the workspace $AZUREML_WORKSPACE_NAME has public network access disabled; RETRAIN_ALLOW_PRIVATE_WORKSPACE=true says the app reaches it through your virtual network"
  else
    die "the workspace $AZUREML_WORKSPACE_NAME has public network access disabled: the service's app (Flex Consumption, not in a virtual network) cannot reach its API, and every job, deployment and MLflow call would fail. Either allow public access (az ml workspace update -n $AZUREML_WORKSPACE_NAME -g $AZUREML_RESOURCE_GROUP --public-network-access Enabled), or connect the app to the workspace's virtual network yourself and then run: azd env set RETRAIN_ALLOW_PRIVATE_WORKSPACE true (infra/README.md, Prerequisites)"
  fi
fi

# 3. Event Grid in the workspace's subscription.
STATE=$(az provider show --namespace Microsoft.EventGrid --subscription "$SUBSCRIPTION" --query registrationState -o tsv) \
  || die "cannot read the registration of Microsoft.EventGrid in subscription $SUBSCRIPTION (az provider show)"
if [ "$STATE" != "Registered" ]; then
  say "registering the resource provider Microsoft.EventGrid in subscription $SUBSCRIPTION (it was $STATE; this takes a minute or two)"
  az provider register --namespace Microsoft.EventGrid --subscription "$SUBSCRIPTION" --wait \
    || die "Microsoft.EventGrid is not registered in subscription $SUBSCRIPTION and registering it failed (above); someone allowed to (Contributor on the subscription) runs: az provider register --namespace Microsoft.EventGrid --subscription $SUBSCRIPTION --wait"
fi

# 4. The workspace's system topic.
TOPICS=$(az eventgrid system-topic list --subscription "$SUBSCRIPTION" -o json) \
  || die "cannot list the Event Grid system topics of subscription $SUBSCRIPTION (az eventgrid system-topic list)"
# Checks each user-assigned identity the topic lists (az identity show); stops when the topic is full.
FOUND=$(printf '%s' "$TOPICS" | "$PYTHON" "$HOOKS/hooklib.py" topic "$WORKSPACE_ID") \
  || die "the workspace's system topic cannot take this deployment (above)"

if [ -n "$FOUND" ]; then
  NAME=$(printf '%s\n' "$FOUND" | sed -n 1p)
  GROUP=$(printf '%s\n' "$FOUND" | sed -n 2p)
  STATE=$(printf '%s\n' "$FOUND" | sed -n 3p)
  say "the workspace has the system topic $NAME (resource group $GROUP): adding its system-assigned identity and this environment's subscriptions, keeping its other identities and tags"
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

# 5. The secret the retraining jobs are named with: generated once, kept after that.
if [ -z "${RETRAIN_JOB_NAME_KEY:-}" ]; then
  KEY=$("$PYTHON" -c "import secrets; print(secrets.token_hex(32))") || die "cannot generate RETRAIN_JOB_NAME_KEY with $PYTHON"
  azd env set RETRAIN_JOB_NAME_KEY "$KEY"
  say "generated RETRAIN_JOB_NAME_KEY (the secret the retraining jobs are named with) in this azd environment"
fi
