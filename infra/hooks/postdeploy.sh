#!/bin/sh
# azd postdeploy hook (azure.yaml). Event Grid validates an AzureFunction destination against the
# deployed function, so the first `azd provision` (inside the first `azd up`) creates the system
# topic without subscriptions. Once `azd deploy` has put the code, and so the function
# on_workspace_event, in place, this hook turns the subscriptions on and provisions again.
# Afterwards RETRAIN_EVENT_SUBSCRIPTIONS=true is in the azd environment and this hook does nothing.
set -eu

if [ "${RETRAIN_EVENT_SUBSCRIPTIONS:-false}" = "true" ]; then
  echo "postdeploy: Event Grid subscriptions are provisioned with the infrastructure; nothing to do."
  exit 0
fi

echo "postdeploy: first deployment: provisioning the Event Grid subscriptions to on_workspace_event."
azd env set RETRAIN_EVENT_SUBSCRIPTIONS true
azd provision --no-prompt
