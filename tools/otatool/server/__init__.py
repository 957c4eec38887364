"""`otatool server`: a campaign server for fleets, in the style of Blynk's admin
OTA API, without its traps (campaigns lost on restart, downgrades by "not
equal", endless reboot loops, no status, passwords in logs).

aiohttp, because one dependency gives async HTTP (a slow client never blocks
the others), multipart uploads, TLS and streamed responses, and the project
already pins it for `otatool serve`, the development server.

Configuration: defaults < `--config FILE` (TOML, keys as in DEFAULTS) <
environment (OTA_SERVER_DB, OTA_SERVER_PORT, ... see ENV) < command line.

    db          SQLite file (default ota-server.sqlite) or postgresql://...
                (needs otatool[postgres]; several servers may share one
                PostgreSQL database: README.md, "Running it for a fleet")
    db_connections  database connections (and threads running the
                database work) per server (default 8)
    backlog     connections the kernel queues before the server accepts
                them (default 1024; capped by net.core.somaxconn)
    files       directory of uploaded images (default: ota-files next to db)
    public_url  how devices reach this server, e.g. https://ota.example.com
                (default: scheme and Host of each check request)
    tls_cert, tls_key   PEM files: serve HTTPS
    max_upload  largest image accepted, bytes (413 above); a compressed
                upload may inflate to no more than this (400 above)

Admin API (HTTP Basic auth; the first start creates user "admin" with a random
password, prints it once and stores only its scrypt hash;
`otatool server --reset-password NAME` makes a new one for an existing admin).
A client address with LOGIN_FAILURES failed logins within LOGIN_WINDOW
seconds gets 429 with Retry-After, without its passwords being checked.

    POST /admin/users      {"name"}                                -> 201
    POST /admin/projects   {"user", "name"}                        -> 201
    POST /admin/devices    {"user", "project"?, "name"?, "token"?} -> 201 {"token"}
    GET  /admin/users | /admin/projects[?user=] | /admin/devices[?user=&project=]
    DELETE /admin/devices/<token>
    POST /admin/ota/upload multipart file [+ manifest]             -> 201 file
         (an image or bundle, plain or compressed: docs/COMPRESSED.md. A
         file: size, sha256 as installed; wire_size, wire_sha256 as
         downloaded; compressed, window, saving_percent)
    POST /admin/ota/start  multipart file [+ manifest] + fields (or query): -> 201
         token=T | user=U [project=P] | none (every device);
         allow_downgrade=1, max_attempts=N, url=U (devices fetch the image
         there, e.g. a CDN, instead of /ota/fw/<id>)
    GET  /admin/ota/start?fileName=F&... the same for an uploaded file
    GET  /admin/ota/stop[?campaign=ID]  stop one, or every running campaign
    GET  /admin/ota/status[?campaign=ID] per campaign, per device (JSON)

Dashboard (for a fleet's owner, in a browser): `/` (fleet), `/campaigns`,
`/campaigns/<id>` (live while open; stop from there), `/campaigns/new`
(upload, check, target, start), `/images`; `/login` with the admin's name
and password (the same throttle as the API), a session cookie (HttpOnly,
SameSite=Strict, Secure over HTTPS; the session in the database, shared by
every server on it: sessions.py) and a CSRF token in every form. Its
failures are pages, not JSON.

Device API (the device token is its credential, in the query or the
X-OTA-Token header):

    GET  /ota/check?token=&version=&build=&chip=
         -> 204 nothing due | 200 {url, version, size, sha256, kind, campaign
                                   [, compressed: true, wire_size][, manifest]}
         size and sha256: the image as installed, also when the file is
         compressed (wire_size: the bytes downloaded)
    GET  /ota/fw/<id>   the file as uploaded; Range/206, If-Range, ETag =
                        "SHA-256 of the file"
    GET  /ota/fw/<id>/manifest.json   its signed manifest, if one was uploaded
    GET  /ota/fw/<id>/<name>          the image again, when <name> is the
                                      manifest's relative url
    POST /ota/report    {token, campaign, state, error?, progress?} -> 204
         state: downloading | installed | confirmed | rolled_back | failed

Every error answer is JSON {"error": what went wrong (one line),
"detail": {facts a program may use: "allowed" methods, "retry_after"
seconds}}: 400 malformed or invalid request, 401 no valid admin credentials
(nothing more said), 404 unknown token, id or path, 405 wrong method, 409
name taken, 413 body too large, 416 range past the end, 429 too many failed
logins, 500 a bug (logged with its traceback, never shown). Only bytes that
are not HTTP at all (a request line or header aiohttp's parser refuses, e.g.
one over 8190 bytes) get aiohttp's plain-text 400: no request exists yet.

Logs: one access line per request (address, method, path without the
query, status, bytes, seconds); device tokens and credentials are never
logged, including in aiohttp's messages about requests it cannot parse.

Signed updates: the private key never comes here. The publisher signs on
their own machine (`otatool sign app.bin --key K --url app.bin` writes
app.manifest.json) and uploads the manifest with the image, as the multipart
field `manifest` (`curl -F file=@app.bin -F manifest=@app.manifest.json`).
The server checks that the manifest describes that image (kind, version,
size, sha256; the signature is the boards' to check) and that its url is
absolute or a bare file name, which it then serves next to the manifest.
The check answer carries the manifest's URL, not the manifest: the answer
stays a few hundred bytes for a board with little RAM, and the board fetches
the manifest with the same call as from static hosting
(ota.begin(manifest_url, public_key=...)). A board with a public key takes
the image from the signed manifest's url and ignores the offer's `url`.

The files of this package, one job each, and the one direction their
imports run in: docs/ARCHITECTURE.md.
"""
from otatool.server.app import make_app
from otatool.server.appkeys import STORE
from otatool.server.command import register
from otatool.server.config import load_config
from otatool.server.runner import ServerThread

__all__ = ["STORE", "ServerThread", "load_config", "make_app", "register"]
