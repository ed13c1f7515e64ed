#!/bin/sh
# Deploy Console sample installer (POSIX twin of install-hello-deploy.ps1/.cmd).
#
# Puts the tiny "Hello Deploy" application under $DEPLOY_INSTALL_ROOT (the agent sets
# it), writes a version marker and appends one line per run to install-count.log, so
# a test can tell how many times it really ran. The short pauses are on purpose: the
# sample takes a second or two so the console's progress bars visibly move.
# Optional first argument: the pause per step in seconds (default 0.3).
set -eu

VERSION="1.0.0"
PAUSE="${1:-0.3}"

if [ -z "${DEPLOY_INSTALL_ROOT:-}" ]; then
    echo "error: DEPLOY_INSTALL_ROOT is not set; run me through deploy-agent" >&2
    exit 2
fi
APP_DIR="$DEPLOY_INSTALL_ROOT/HelloDeploy"

step() {
    echo "[$1/5] $2"
    sleep "$PAUSE"
}

step 1 "checking the target folder $APP_DIR"
mkdir -p "$APP_DIR/bin"

step 2 "writing the program"
cat > "$APP_DIR/bin/hello-deploy" <<PROGRAM
#!/bin/sh
echo "Hello from Hello Deploy $VERSION, put in place by Deploy Console."
PROGRAM
chmod 755 "$APP_DIR/bin/hello-deploy"

step 3 "writing the read-me"
cat > "$APP_DIR/README.txt" <<README
Hello Deploy $VERSION
A sample application installed by the Deploy Console demo.
Run bin/hello-deploy to be greeted.
README

step 4 "writing the version marker"
echo "$VERSION" > "$APP_DIR/VERSION"

step 5 "recording this installation"
echo "installed $VERSION at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$APP_DIR/install-count.log"

echo "Hello Deploy $VERSION installed in $APP_DIR"
exit 0
