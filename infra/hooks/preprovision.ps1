# azd preprovision hook for Windows; see preprovision.sh for what it does and why.
$script:Hook = 'preprovision'
. "$PSScriptRoot/lib.ps1"

Require @('AZUREML_WORKSPACE_NAME', 'AZUREML_RESOURCE_GROUP')
$subscription = if ($env:AZUREML_SUBSCRIPTION_ID) { $env:AZUREML_SUBSCRIPTION_ID } else { $env:AZURE_SUBSCRIPTION_ID }
if (-not $subscription) { $subscription = az account show --query id -o tsv; if ($LASTEXITCODE -ne 0) { Fail 'az is not signed in: run az login' } }

$policy = if ($env:RETRAIN_POLICY_PATH) { $env:RETRAIN_POLICY_PATH } else { 'policy.yaml' }
$python = Get-ProjectPython
Assert-Policy $python $policy
$endpoints = (& $python "$PSScriptRoot/hooklib.py" logs-endpoints $policy | Out-String).Trim()
azd env set RETRAIN_TRAFFIC_LOG_ENDPOINTS "$endpoints"

$workspaceId = az resource show --subscription $subscription -g $env:AZUREML_RESOURCE_GROUP -n $env:AZUREML_WORKSPACE_NAME `
    --resource-type Microsoft.MachineLearningServices/workspaces --query id -o tsv
if ($LASTEXITCODE -ne 0) { Fail "workspace $($env:AZUREML_WORKSPACE_NAME) not found in resource group $($env:AZUREML_RESOURCE_GROUP) (subscription $subscription); check AZUREML_WORKSPACE_NAME, AZUREML_RESOURCE_GROUP and AZUREML_SUBSCRIPTION_ID" }
$topics = az eventgrid system-topic list --subscription $subscription -o json | Out-String
if ($LASTEXITCODE -ne 0) { Fail "cannot list the Event Grid system topics of subscription $subscription" }
$found = @($topics | & $python "$PSScriptRoot/hooklib.py" topic $workspaceId "$env:RETRAIN_TOPIC_IDENTITY_ID")

if ($found.Count -ge 3) {
    Say "the workspace has the system topic $($found[0]) (resource group $($found[1])): adding this environment's identity and subscriptions to it, keeping its identities and tags"
    azd env set RETRAIN_SYSTEM_TOPIC_NAME $found[0]
    azd env set RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP $found[1]
    azd env set RETRAIN_SYSTEM_TOPIC_STATE $found[2]
    if (-not $env:RETRAIN_SYSTEM_TOPIC_CREATED) { azd env set RETRAIN_SYSTEM_TOPIC_CREATED false }
} else {
    Say 'the workspace has no system topic yet: this deployment creates one'
    azd env set RETRAIN_SYSTEM_TOPIC_NAME ''
    azd env set RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP ''
    azd env set RETRAIN_SYSTEM_TOPIC_STATE ''
    azd env set RETRAIN_SYSTEM_TOPIC_CREATED true
}
