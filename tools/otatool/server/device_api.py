"""The device API (/ota/...): check-in (what to install now, if anything),
the image whole or by range, its signed manifest, and progress reports.

A device's token is its credential, in the query or the X-OTA-Token header.
Refusals are raised (store exceptions, aiohttp's HTTP errors) and
errors.json_errors answers them.
"""
import base64
import json
import os

from aiohttp import web

from otatool.serve import byte_range
from otatool.server.appkeys import CONFIG, DB
from otatool.server.inputs import json_body, short_text, sql_int
from otatool.server.store import Invalid, NotFound
from otatool.server.uploads import MANIFEST_NAME, blob_path

_REPORT_MAX = 1024      # device reports


async def check(request):
    q = request.query
    token = short_text(q.get("token") or request.headers.get("X-OTA-Token"), "token")
    version = short_text(q.get("version"), "version")
    c = await request.app[DB].check_in(token, version, short_text(q.get("build"), "build", False),
                                    short_text(q.get("chip"), "chip", False))
    if c is None:
        return web.Response(status=204)
    base = request.app[CONFIG]["public_url"] or "%s://%s" % (request.scheme, request.host)
    fw = "%s/ota/fw/%s" % (base.rstrip("/"), c["file_id"])
    offer = {"url": c["url"] or fw, "version": c["version"], "size": c["size"],
             "sha256": c["sha256"], "kind": c["kind"], "campaign": c["id"]}
    if c["window_bits"] is not None:
        # size and sha256 stay the installed image's: the board checks them
        # against what it inflates; wire_size is what it downloads.
        offer.update(compressed=True, wire_size=c["wire_size"])
    if os.path.exists(blob_path(request.app, c["file_id"], manifest=True)):
        offer["manifest"] = "%s/%s" % (fw, MANIFEST_NAME)
    return web.json_response(offer)


def _byte_range(header, size):
    """serve.byte_range, with a 416 raised as aiohttp wants it."""
    r = byte_range(header, size)
    if r == "unsatisfiable":
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": "bytes */%d" % size})
    return r


async def signed_file(request):
    """/ota/fw/<id>/manifest.json, and the image under the name the
    manifest's relative url gives it."""
    row = await request.app[DB].file(request.match_info["id"])
    if row is None:  # else the id is a known one, safe in a path
        raise NotFound("no such image")
    try:
        with open(blob_path(request.app, row["id"], manifest=True), "rb") as f:
            manifest = f.read()
    except OSError:
        raise NotFound("no manifest for this image")
    name = request.match_info["name"]
    if name == MANIFEST_NAME:
        return web.Response(body=manifest, content_type="application/json")
    if json.loads(base64.b64decode(json.loads(manifest)["manifest"]))["url"] != name:
        raise NotFound("no such file")
    return await firmware(request)


async def firmware(request):
    row = await request.app[DB].file(request.match_info["id"])
    if row is None:
        raise NotFound("no such image")
    size, etag = row["wire_size"], '"%s"' % row["wire_sha256"]  # the file as kept
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    start, end, status = 0, size, 200
    rng = request.headers.get("Range")
    # If-Range: resume only if the entity is still the one the client has.
    if rng and request.headers.get("If-Range", etag) == etag:
        r = _byte_range(rng, size)
        if r:
            (start, end), status = r, 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end - 1, size)
    headers["Content-Length"] = str(end - start)
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)
    if request.method != "HEAD":
        try:
            await _send_file(resp, blob_path(request.app, row["id"]), start, end - start)
        except ConnectionError:
            return resp  # the board left; it resumes with Range. Not an error to log.
    await resp.write_eof()
    return resp


async def _send_file(resp, path, start, length):
    with open(path, "rb") as f:
        f.seek(start)
        while length:
            chunk = f.read(min(length, 64 * 1024))
            if not chunk:
                break
            await resp.write(chunk)  # waits while the client is slow
            length -= len(chunk)


async def report(request):
    d = await json_body(request, _REPORT_MAX)
    token = short_text(d.get("token") or request.headers.get("X-OTA-Token"), "token")
    campaign = sql_int(d.get("campaign"), "campaign")
    progress = None if d.get("progress") is None else sql_int(d["progress"], "progress")
    error = d.get("error")
    if error is not None and not isinstance(error, str):
        raise Invalid("error must be a string")
    if error:
        # A board's own words, kept even when they hold a newline or worse.
        error = "".join(c if c.isprintable() else "?" for c in error[:200])
    await request.app[DB].report(token, campaign, d.get("state"), error, progress)
    return web.Response(status=204)
