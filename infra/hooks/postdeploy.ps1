# azd postdeploy hook for Windows; see postdeploy.sh for why it exists and what it checks. Every
# native command is followed by a $LASTEXITCODE check (tests/test_hooks.py checks that statically).
$script:Hook = 'postdeploy'
. "$PSScriptRoot/lib.ps1"

if ($env:RETRAIN_SKIP_EVENT_SUBSCRIPTIONS -eq 'true') {
    Say 'RETRAIN_SKIP_EVENT_SUBSCRIPTIONS=true (CI): the subscriptions are the business of azd up; nothing to do.'
    exit 0
}
Require @('AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'RETRAIN_SYSTEM_TOPIC_NAME', 'RETRAIN_EVENT_SUBSCRIPTION_NAMES')
$subscription = if ($env:AZUREML_SUBSCRIPTION_ID) { $env:AZUREML_SUBSCRIPTION_ID } else { $env:AZURE_SUBSCRIPTION_ID }
$topicGroup = if ($env:RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP) { $env:RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP } else { $env:AZUREML_RESOURCE_GROUP }
$function = 'on_workspace_event'
$attempts = if ($env:RETRAIN_INDEX_ATTEMPTS) { [int]$env:RETRAIN_INDEX_ATTEMPTS } else { 20 }
$interval = if ($env:RETRAIN_INDEX_INTERVAL) { [int]$env:RETRAIN_INDEX_INTERVAL } else { 15 }
$wanted = $env:RETRAIN_EVENT_SUBSCRIPTION_NAMES -split ','

function Get-Missing {
    $existing = @(az eventgrid system-topic event-subscription list --subscription $subscription -g $topicGroup `
        --system-topic-name $env:RETRAIN_SYSTEM_TOPIC_NAME --query '[].name' -o tsv 2>$null)
    if ($LASTEXITCODE -ne 0) { $existing = @() }
    return @($wanted | Where-Object { $existing -notcontains $_ })
}

$missing = Get-Missing
if ($missing.Count -eq 0) {
    if ($env:RETRAIN_EVENT_SUBSCRIPTIONS -ne 'true') { Set-AzdEnv 'RETRAIN_EVENT_SUBSCRIPTIONS' 'true' }
    Say "the Event Grid subscriptions exist ($($env:RETRAIN_EVENT_SUBSCRIPTION_NAMES)); nothing to do."
    exit 0
}
Say "missing Event Grid subscriptions: $($missing -join ' ')"

for ($attempt = 1; ; $attempt++) {
    az functionapp function show --subscription $env:AZURE_SUBSCRIPTION_ID -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME --function-name $function --query name -o tsv *> $null
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge $attempts) {
        Fail "the function $function is not indexed on $($env:AZURE_FUNCTION_APP_NAME) after $attempts checks; Event Grid would refuse the subscriptions (Destination endpoint not found). Look at the app's start-up in Application Insights (traces), fix it, then run azd deploy again."
    }
    Say "waiting for $function to be indexed on $($env:AZURE_FUNCTION_APP_NAME) ($attempt/$attempts)"
    Start-Sleep -Seconds $interval
}

Set-AzdEnv 'RETRAIN_EVENT_SUBSCRIPTIONS' 'true'
$ok = $false
try {
    azd provision --no-prompt
    $ok = $LASTEXITCODE -eq 0
} finally {
    if (-not $ok) { Set-AzdEnv 'RETRAIN_EVENT_SUBSCRIPTIONS' 'false' }
}
if (-not $ok) { Fail 'provisioning the Event Grid subscriptions failed (above); RETRAIN_EVENT_SUBSCRIPTIONS is false again: fix the cause and run azd up again.' }
$missing = Get-Missing
if ($missing.Count -gt 0) {
    Set-AzdEnv 'RETRAIN_EVENT_SUBSCRIPTIONS' 'false'
    Fail "the provision succeeded but these subscriptions do not exist: $($missing -join ' '); run azd up again."
}
Say "the Event Grid subscriptions exist: $($env:RETRAIN_EVENT_SUBSCRIPTION_NAMES)"
