"""
A peer of streamrelay for C{make bench --peers}: Debian's nginx, as two
servers from the configurations written here.

The front nginx proxies C{PUT /files/NAME} with C{proxy_request_buffering
off} (each body is sent on as it arrives) over keep-alive HTTP/1.1
connections to the back nginx, whose WebDAV module (C{dav_methods PUT})
writes the body into C{client_body_temp_path} (a folder on the storage's
file system) and renames it to C{STORE/files/NAME} when the body is
complete, answering 201.  nginx neither hashes a body nor fsyncs it: it is
measured without fsync only, and the benchmark hashes what it stored.

Both run in the foreground (C{daemon off}) with a master and one worker per
CPU, logs to stderr, every temporary path in their own folder, and, when
started as root, workers of the same user (so they can write the bench's
private folders).
"""

from __future__ import annotations

from pathlib import Path

#: Bytes the back nginx reads of a body before writing them to its file.
BODY_BUFFER = "1m"


def _common(folder: Path, user: str | None) -> str:
    temps = "\n".join(
        f"    {kind}_temp_path {folder / ('tmp-' + kind)};"
        for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        (f"user {user};\n" if user else "")
        + "worker_processes auto;\n"
        + f"pid {folder / 'nginx.pid'};\n"
        + "error_log stderr warn;\n"
        + "events { worker_connections 4096; }\n"
        + "http {\n"
        + "    access_log off;\n"
        + "    client_max_body_size 0;\n"
        + f"{temps}\n"
    )


def backConfig(folder: Path, store: Path, port: int, user: str | None = None) -> str:
    """
    The back nginx: WebDAV PUT into C{store/files/}, the bodies' temporary
    files in C{store/.nginx-body} (the same file system, so the last step
    is a rename).
    """
    return (
        _common(folder, user)
        + f"    client_body_temp_path {store / '.nginx-body'};\n"
        + f"    client_body_buffer_size {BODY_BUFFER};\n"
        + "    server {\n"
        + f"        listen 127.0.0.1:{port};\n"
        + f"        root {store};\n"
        + "        location /files/ {\n"
        + "            dav_methods PUT;\n"
        + "            create_full_put_path on;\n"
        + "            dav_access user:rw;\n"
        + "        }\n"
        + "    }\n"
        + "}\n"
    )


def frontConfig(folder: Path, port: int, backendPort: int, user: str | None = None) -> str:
    """The front nginx: streams each request body to the back one (no request buffering)."""
    return (
        _common(folder, user)
        + f"    client_body_temp_path {folder / 'tmp-body'};\n"
        + "    upstream back {\n"
        + f"        server 127.0.0.1:{backendPort};\n"
        + "        keepalive 128;\n"
        + "    }\n"
        + "    server {\n"
        + f"        listen 127.0.0.1:{port};\n"
        + "        location / {\n"
        + "            proxy_pass http://back;\n"
        + "            proxy_http_version 1.1;\n"
        + '            proxy_set_header Connection "";\n'
        + "            proxy_request_buffering off;\n"
        + "            proxy_read_timeout 3600s;\n"
        + "            proxy_send_timeout 3600s;\n"
        + "        }\n"
        + "    }\n"
        + "}\n"
    )
