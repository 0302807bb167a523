# azd predeploy hook for Windows; see predeploy.sh: no deploy without a valid policy.
$script:Hook = 'predeploy'
. "$PSScriptRoot/lib.ps1"

$policy = if ($env:RETRAIN_POLICY_PATH) { $env:RETRAIN_POLICY_PATH } else { 'policy.yaml' }
Assert-Policy (Get-ProjectPython) $policy
