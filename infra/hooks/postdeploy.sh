#!/bin/sh
# azd postdeploy hook (azure.yaml). Event Grid validates an AzureFunction destination against the
# deployed function ("Destination endpoint not found" if it is not indexed yet), so the first
# `azd provision` creates the system topic without subscriptions. After each deploy this hook
# checks whether this environment's subscriptions exist; if not, it waits until the function
# on_workspace_event is indexed, provisions with RETRAIN_EVENT_SUBSCRIPTIONS=true, and checks
# again. RETRAIN_EVENT_SUBSCRIPTIONS stays true only once the subscriptions exist: after a failed
# or interrupted provision it is false again, and the next `azd up` (or `azd deploy`) tries again.
set -eu
HOOK=postdeploy
HOOKS=$(cd "$(dirname "$0")" && pwd)
. "$HOOKS/lib.sh"

if [ "${RETRAIN_SKIP_EVENT_SUBSCRIPTIONS:-false}" = "true" ]; then
  say "RETRAIN_SKIP_EVENT_SUBSCRIPTIONS=true (CI): the subscriptions are the business of azd up; nothing to do."
  exit 0
fi

require AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME RETRAIN_SYSTEM_TOPIC_NAME RETRAIN_EVENT_SUBSCRIPTION_NAMES
# Every az call names its subscription: az's default (az account set) need not be the app's
# (AZURE_SUBSCRIPTION_ID) or the workspace's (AZUREML_SUBSCRIPTION_ID, where the topic lives).
SUBSCRIPTION=${AZUREML_SUBSCRIPTION_ID:-$AZURE_SUBSCRIPTION_ID}
TOPIC_GROUP=${RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP:-${AZUREML_RESOURCE_GROUP:-}}
FUNCTION=on_workspace_event
ATTEMPTS=${RETRAIN_INDEX_ATTEMPTS:-20}
INTERVAL=${RETRAIN_INDEX_INTERVAL:-15}

missing_subscriptions() {
  existing=$(az eventgrid system-topic event-subscription list --subscription "$SUBSCRIPTION" \
    -g "$TOPIC_GROUP" --system-topic-name "$RETRAIN_SYSTEM_TOPIC_NAME" --query "[].name" -o tsv 2>/dev/null) || existing=""
  missing=""
  for name in $(printf '%s' "$RETRAIN_EVENT_SUBSCRIPTION_NAMES" | tr ',' ' '); do
    printf '%s\n' "$existing" | grep -qx "$name" || missing="$missing $name"
  done
  printf '%s' "$missing"
}

MISSING=$(missing_subscriptions)
if [ -z "$MISSING" ]; then
  [ "${RETRAIN_EVENT_SUBSCRIPTIONS:-false}" = "true" ] || azd env set RETRAIN_EVENT_SUBSCRIPTIONS true
  say "the Event Grid subscriptions exist ($RETRAIN_EVENT_SUBSCRIPTION_NAMES); nothing to do."
  exit 0
fi
say "missing Event Grid subscriptions:$MISSING"

attempt=1
until az functionapp function show --subscription "$AZURE_SUBSCRIPTION_ID" -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
    --function-name "$FUNCTION" --query name -o tsv >/dev/null 2>&1; do
  if [ "$attempt" -ge "$ATTEMPTS" ]; then
    die "the function $FUNCTION is not indexed on $AZURE_FUNCTION_APP_NAME after $ATTEMPTS checks; Event Grid would refuse the subscriptions (Destination endpoint not found). Look at the app's start-up in Application Insights (traces), fix it, then run azd deploy again."
  fi
  say "waiting for $FUNCTION to be indexed on $AZURE_FUNCTION_APP_NAME ($attempt/$ATTEMPTS)"
  attempt=$((attempt + 1))
  sleep "$INTERVAL"
done

reset() { azd env set RETRAIN_EVENT_SUBSCRIPTIONS false; }
trap 'reset; exit 130' INT TERM
azd env set RETRAIN_EVENT_SUBSCRIPTIONS true
if ! azd provision --no-prompt; then
  reset
  die "provisioning the Event Grid subscriptions failed (above); RETRAIN_EVENT_SUBSCRIPTIONS is false again: fix the cause and run azd up again."
fi
trap - INT TERM
MISSING=$(missing_subscriptions)
if [ -n "$MISSING" ]; then
  reset
  die "the provision succeeded but these subscriptions do not exist:$MISSING; run azd up again."
fi
say "the Event Grid subscriptions exist: $RETRAIN_EVENT_SUBSCRIPTION_NAMES"
