# Shared by the Windows azd hooks (dot-sourced); the POSIX twins are lib.sh and *.sh, which the
# tests run (tests/test_hooks.py). Keep the two in step. Needs PowerShell 7.3 or later, which
# passes empty arguments to native commands (azd env set NAME '').
$ErrorActionPreference = 'Stop'

function Fail([string]$message) { [Console]::Error.WriteLine("${script:Hook}: $message"); exit 1 }
function Say([string]$message) { Write-Host "${script:Hook}: $message" }

function Require([string[]]$names) {
    foreach ($name in $names) {
        if (-not [Environment]::GetEnvironmentVariable($name)) {
            Fail "$name is not set; run: azd env set $name <value> (see infra/README.md)"
        }
    }
}

function Test-ProjectPython([string]$python) {
    if (-not $python -or -not (Test-Path $python)) { return $false }
    & $python -c 'import function_app.cli, yaml' *> $null
    return $LASTEXITCODE -eq 0
}

# A Python with the project installed: RETRAIN_HOOK_PYTHON, the repository's .venv, or a virtual
# environment made once under .azure/<env>/hook-venv.
function Get-ProjectPython {
    foreach ($candidate in @($env:RETRAIN_HOOK_PYTHON, '.venv/Scripts/python.exe', '.venv/bin/python')) {
        if (Test-ProjectPython $candidate) { return $candidate }
    }
    $envName = if ($env:AZURE_ENV_NAME) { $env:AZURE_ENV_NAME } else { 'default' }
    $venv = ".azure/$envName/hook-venv"
    $python = if ($IsWindows -or $env:OS -eq 'Windows_NT') { "$venv/Scripts/python.exe" } else { "$venv/bin/python" }
    if (-not (Test-ProjectPython $python)) {
        Say "installing the project into $venv to validate the policy (once)"
        python -m venv $venv | Out-Host; if ($LASTEXITCODE -ne 0) { Fail 'python -m venv failed: install Python 3.11' }
        & $python -m pip install -q -r requirements.txt | Out-Host; if ($LASTEXITCODE -ne 0) { Fail 'pip install -r requirements.txt failed' }
        & $python -m pip install -q --no-deps . | Out-Host; if ($LASTEXITCODE -ne 0) { Fail 'pip install of the project failed' }
    }
    return $python
}

function Assert-Policy([string]$python, [string]$policy) {
    & $python -m function_app.cli check-policy $policy
    if ($LASTEXITCODE -ne 0) {
        Fail "the policy $policy is not valid (above); fix it, or point RETRAIN_POLICY_PATH at the right file: azd env set RETRAIN_POLICY_PATH <path>"
    }
    & $python "$PSScriptRoot/hooklib.py" packaged $policy
    if ($LASTEXITCODE -ne 0) { Fail 'move the policy, or change .funcignore' }
}

# `azd env set` that stops the hook when azd fails (PowerShell does not stop on a native command's
# exit code, whatever $ErrorActionPreference says: every native call here checks $LASTEXITCODE).
function Set-AzdEnv([string]$name, [string]$value) {
    azd env set $name $value
    if ($LASTEXITCODE -ne 0) { Fail "azd env set $name failed (above); is this an azd project with a selected environment (azd env select)?" }
}
