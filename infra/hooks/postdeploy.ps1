# azd postdeploy hook for Windows; see postdeploy.sh for why it exists.
$ErrorActionPreference = 'Stop'

if ($env:RETRAIN_EVENT_SUBSCRIPTIONS -eq 'true') {
    Write-Host 'postdeploy: Event Grid subscriptions are provisioned with the infrastructure; nothing to do.'
    exit 0
}

Write-Host 'postdeploy: first deployment: provisioning the Event Grid subscriptions to on_workspace_event.'
azd env set RETRAIN_EVENT_SUBSCRIPTIONS true
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd provision --no-prompt
exit $LASTEXITCODE
