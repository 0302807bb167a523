# azd preprovision hook for Windows; see preprovision.sh for what it does and why. Every native
# command is followed by a $LASTEXITCODE check (tests/test_hooks.py checks that statically).
$script:Hook = 'preprovision'
. "$PSScriptRoot/lib.ps1"

Require @('AZUREML_WORKSPACE_NAME', 'AZUREML_RESOURCE_GROUP')
$subscription = if ($env:AZUREML_SUBSCRIPTION_ID) { $env:AZUREML_SUBSCRIPTION_ID } else { $env:AZURE_SUBSCRIPTION_ID }
if (-not $subscription) { $subscription = az account show --query id -o tsv; if ($LASTEXITCODE -ne 0) { Fail 'az is not signed in: run az login' } }

# 1. The policy.
$policy = if ($env:RETRAIN_POLICY_PATH) { $env:RETRAIN_POLICY_PATH } else { 'policy.yaml' }
$python = Get-ProjectPython
Assert-Policy $python $policy
$endpoints = (& $python "$PSScriptRoot/hooklib.py" logs-endpoints $policy | Out-String).Trim()
if ($LASTEXITCODE -ne 0) { Fail "cannot read the endpoints of $policy (above)" }
Set-AzdEnv 'RETRAIN_TRAFFIC_LOG_ENDPOINTS' $endpoints
$newData = @(& $python "$PSScriptRoot/hooklib.py" new-data $policy)
if ($LASTEXITCODE -ne 0) { Fail "cannot read the new-data storage accounts of $policy (above)" }
Set-AzdEnv 'RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID' $(if ($newData.Count -gt 0) { $newData[0].Trim() } else { '' })
Set-AzdEnv 'RETRAIN_NEW_DATA_PREFIXES' $(if ($newData.Count -gt 1) { $newData[1].Trim() } else { '' })

# 2. The workspace, and whether the service can reach it.
$workspaceId = az resource show --subscription $subscription -g $env:AZUREML_RESOURCE_GROUP -n $env:AZUREML_WORKSPACE_NAME `
    --resource-type Microsoft.MachineLearningServices/workspaces --query id -o tsv
if ($LASTEXITCODE -ne 0) { Fail "workspace $($env:AZUREML_WORKSPACE_NAME) not found in resource group $($env:AZUREML_RESOURCE_GROUP) (subscription $subscription); check AZUREML_WORKSPACE_NAME, AZUREML_RESOURCE_GROUP and AZUREML_SUBSCRIPTION_ID" }
$access = az resource show --ids $workspaceId --query properties.publicNetworkAccess -o tsv
if ($LASTEXITCODE -ne 0) { Fail "cannot read the workspace $($env:AZUREML_WORKSPACE_NAME) (az resource show --ids $workspaceId)" }
if ($access -eq 'Disabled') {
    if ($env:RETRAIN_ALLOW_PRIVATE_WORKSPACE -eq 'true') {
        Say "the workspace $($env:AZUREML_WORKSPACE_NAME) has public network access disabled; RETRAIN_ALLOW_PRIVATE_WORKSPACE=true says the app reaches it through your virtual network"
    } else {
        Fail "the workspace $($env:AZUREML_WORKSPACE_NAME) has public network access disabled: the service's app (Flex Consumption, not in a virtual network) cannot reach its API, and every job, deployment and MLflow call would fail. Either allow public access (az ml workspace update -n $($env:AZUREML_WORKSPACE_NAME) -g $($env:AZUREML_RESOURCE_GROUP) --public-network-access Enabled), or connect the app to the workspace's virtual network yourself and then run: azd env set RETRAIN_ALLOW_PRIVATE_WORKSPACE true (infra/README.md, Prerequisites)"
    }
}

# 3. Event Grid in the workspace's subscription.
$state = az provider show --namespace Microsoft.EventGrid --subscription $subscription --query registrationState -o tsv
if ($LASTEXITCODE -ne 0) { Fail "cannot read the registration of Microsoft.EventGrid in subscription $subscription (az provider show)" }
if ($state -ne 'Registered') {
    Say "registering the resource provider Microsoft.EventGrid in subscription $subscription (it was $state; this takes a minute or two)"
    az provider register --namespace Microsoft.EventGrid --subscription $subscription --wait
    if ($LASTEXITCODE -ne 0) { Fail "Microsoft.EventGrid is not registered in subscription $subscription and registering it failed (above); someone allowed to (Contributor on the subscription) runs: az provider register --namespace Microsoft.EventGrid --subscription $subscription --wait" }
}

# 4. The workspace's system topic.
$topics = az eventgrid system-topic list --subscription $subscription -o json | Out-String
if ($LASTEXITCODE -ne 0) { Fail "cannot list the Event Grid system topics of subscription $subscription (az eventgrid system-topic list)" }
$found = @($topics | & $python "$PSScriptRoot/hooklib.py" topic $workspaceId)
if ($LASTEXITCODE -ne 0) { Fail "the workspace's system topic cannot take this deployment (above)" }

if ($found.Count -ge 3) {
    Say "the workspace has the system topic $($found[0]) (resource group $($found[1])): adding its system-assigned identity and this environment's subscriptions, keeping its other identities and tags"
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_NAME' $found[0]
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP' $found[1]
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_STATE' $found[2]
    if (-not $env:RETRAIN_SYSTEM_TOPIC_CREATED) { Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_CREATED' 'false' }
} else {
    Say 'the workspace has no system topic yet: this deployment creates one'
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_NAME' ''
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP' ''
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_STATE' ''
    Set-AzdEnv 'RETRAIN_SYSTEM_TOPIC_CREATED' 'true'
}

# 5. The secret the retraining jobs are named with: generated once, kept after that.
if (-not $env:RETRAIN_JOB_NAME_KEY) {
    $key = (& $python -c 'import secrets; print(secrets.token_hex(32))' | Out-String).Trim()
    if ($LASTEXITCODE -ne 0) { Fail "cannot generate RETRAIN_JOB_NAME_KEY with $python" }
    Set-AzdEnv 'RETRAIN_JOB_NAME_KEY' $key
    Say 'generated RETRAIN_JOB_NAME_KEY (the secret the retraining jobs are named with) in this azd environment'
}
