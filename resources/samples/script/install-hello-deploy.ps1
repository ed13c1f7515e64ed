# Deploy Console sample installer (Windows twin of install-hello-deploy.sh).
#
# Puts the tiny "Hello Deploy" application under $env:DEPLOY_INSTALL_ROOT (the agent
# sets it; Program Files otherwise), writes a version marker and appends one line per
# run to install-count.log. The short pauses make the progress bars visibly move.
param([double]$Pause = 0.3)
$ErrorActionPreference = "Stop"

$Version = "1.0.0"
$Root = $env:DEPLOY_INSTALL_ROOT
if (-not $Root) { $Root = $env:ProgramFiles }
$AppDir = Join-Path $Root "HelloDeploy"

function Step([int]$Number, [string]$Text) {
    Write-Output "[$Number/5] $Text"
    Start-Sleep -Milliseconds ([int]($Pause * 1000))
}

Step 1 "checking the target folder $AppDir"
New-Item -ItemType Directory -Force -Path (Join-Path $AppDir "bin") | Out-Null

Step 2 "writing the program"
Set-Content -Encoding UTF8 -Path (Join-Path $AppDir "bin\hello-deploy.cmd") `
    -Value "@echo Hello from Hello Deploy $Version, put in place by Deploy Console."

Step 3 "writing the read-me"
Set-Content -Encoding UTF8 -Path (Join-Path $AppDir "README.txt") -Value @(
    "Hello Deploy $Version",
    "A sample application installed by the Deploy Console demo.",
    "Run bin\hello-deploy.cmd to be greeted."
)

Step 4 "writing the version marker"
Set-Content -Encoding ASCII -Path (Join-Path $AppDir "VERSION") -Value $Version

Step 5 "recording this installation"
$Stamp = (Get-Date).ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ssZ")
Add-Content -Encoding ASCII -Path (Join-Path $AppDir "install-count.log") `
    -Value "installed $Version at $Stamp"

Write-Output "Hello Deploy $Version installed in $AppDir"
exit 0
