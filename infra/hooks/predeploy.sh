#!/bin/sh
# azd predeploy hook (azure.yaml): runs before every `azd deploy` (and so every `azd up`, and the
# GitHub workflow's deploy). The app reads its policy (RETRAIN_POLICY_PATH, default policy.yaml,
# deployed with the code) at start-up, and without a valid one every event fails: so the deploy
# stops here, with the policy's own message, instead of shipping a broken app.
set -eu
HOOK=predeploy
HOOKS=$(cd "$(dirname "$0")" && pwd)
. "$HOOKS/lib.sh"

POLICY=${RETRAIN_POLICY_PATH:-policy.yaml}
check_policy "$(project_python)" "$POLICY"
