#!/usr/bin/env bash
# Run nginx in the foreground on 127.0.0.1:PORT serving ROOT/packages/<sha256> to
# requests that carry "Authorization: Bearer TOKEN" -- the same URL shape and the
# same check as the Deploy Console server. One worker, to match one server process.
# Usage: run.sh PORT ROOT TOKEN WORKDIR
set -euo pipefail
port="$1"; root="$2"; token="$3"; workdir="$4"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
mkdir -p "$workdir/logs" "$workdir/tmp"
cat > "$workdir/nginx.conf" <<CONF
worker_processes 1;
user $(id -un);
pid $workdir/nginx.pid;
error_log $workdir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $workdir/tmp;
    proxy_temp_path $workdir/tmp;
    fastcgi_temp_path $workdir/tmp;
    uwsgi_temp_path $workdir/tmp;
    scgi_temp_path $workdir/tmp;
    server {
        listen 127.0.0.1:$port;
        root $root;
        location /packages/ {
            if (\$http_authorization != "Bearer $token") { return 401; }
            default_type application/octet-stream;
        }
    }
}
CONF
exec "$nginx_bin" -p "$workdir" -c "$workdir/nginx.conf" -g 'daemon off;'
