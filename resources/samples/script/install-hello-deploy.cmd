@echo off
rem Deploy Console sample installer (cmd twin of install-hello-deploy.sh).
rem Puts "Hello Deploy" under %DEPLOY_INSTALL_ROOT% (Program Files otherwise), writes a
rem version marker and appends one line per run to install-count.log.
setlocal
set "VERSION=1.0.0"
set "ROOT=%DEPLOY_INSTALL_ROOT%"
if "%ROOT%"=="" set "ROOT=%ProgramFiles%"
set "APP_DIR=%ROOT%\HelloDeploy"

echo [1/5] checking the target folder %APP_DIR%
if not exist "%APP_DIR%\bin" mkdir "%APP_DIR%\bin" || exit /b 1
ping -n 2 127.0.0.1 >nul

echo [2/5] writing the program
> "%APP_DIR%\bin\hello-deploy.cmd" echo @echo Hello from Hello Deploy %VERSION%, put in place by Deploy Console.

echo [3/5] writing the read-me
> "%APP_DIR%\README.txt" (
    echo Hello Deploy %VERSION%
    echo A sample application installed by the Deploy Console demo.
    echo Run bin\hello-deploy.cmd to be greeted.
)

echo [4/5] writing the version marker
> "%APP_DIR%\VERSION" echo %VERSION%

echo [5/5] recording this installation
>> "%APP_DIR%\install-count.log" echo installed %VERSION% at %DATE% %TIME%

echo Hello Deploy %VERSION% installed in %APP_DIR%
exit /b 0
