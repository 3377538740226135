# Sourced by the benchmarks: nginx_static DIR PORT writes DIR/nginx.conf for one nginx
# worker serving DIR/www as static files (access log off, application/json) on
# 127.0.0.1:PORT, starts it in the foreground of a background job and prints its pid.
# DIR must be readable by nginx's worker (chmod 755).
nginx_static() {
  printf '%s\n' "daemon off; worker_processes 1; pid $1/nginx.pid; error_log $1/nginx.err;" \
    "events { worker_connections 1024; }" \
    "http { access_log off; server { listen 127.0.0.1:$2; root $1/www; default_type application/json; } }" \
    > "$1/nginx.conf"
  nginx -c "$1/nginx.conf" -p "$1" >/dev/null 2>&1 &
  echo $!
}
