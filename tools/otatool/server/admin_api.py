"""The admin API (/admin/...): users, projects and devices registered and
listed; images uploaded; campaigns started, stopped and watched.

Every handler runs after auth.admin_auth, so request[ADMIN] names the admin
for the log. Refusals are raised (store exceptions, aiohttp's HTTP errors)
and errors.json_errors answers them.
"""
import os

from aiohttp import web

from otatool.cli import saving_percent
from otatool.server.appkeys import ADMIN, CONFIG, DB
from otatool.server.inputs import json_body, parsed_sql_int, short_text
from otatool.server.logs import log
from otatool.server.store import Invalid
from otatool.server.uploads import blob_path, read_form, store_upload


# --- registry ---------------------------------------------------------------

async def add_user(request):
    name = short_text((await json_body(request)).get("name"), "name")
    await request.app[DB].add_user(name)
    log.info("admin %s added user %s", request[ADMIN], name)
    return web.json_response({"name": name}, status=201)


async def add_project(request):
    d = await json_body(request)
    user, name = short_text(d.get("user"), "user"), short_text(d.get("name"), "name")
    await request.app[DB].add_project(user, name)
    log.info("admin %s added project %s/%s", request[ADMIN], user, name)
    return web.json_response({"user": user, "name": name}, status=201)


async def add_device(request):
    d = await json_body(request)
    user = short_text(d.get("user"), "user")
    project = short_text(d.get("project"), "project", False)
    name = short_text(d.get("name"), "name", False)
    token = await request.app[DB].add_device(user, project, name,
                                          short_text(d.get("token"), "token", False))
    log.info("admin %s added a device for %s/%s", request[ADMIN], user, project)
    return web.json_response({"token": token, "user": user, "project": project, "name": name},
                             status=201)


async def list_users(request):
    return web.json_response(await request.app[DB].users())


async def list_projects(request):
    user = short_text(request.query.get("user"), "user", False)
    return web.json_response(await request.app[DB].projects(user))


async def list_devices(request):
    q = request.query
    devices = await request.app[DB].devices(short_text(q.get("user"), "user", False),
                                            short_text(q.get("project"), "project", False))
    return web.json_response(devices)


async def remove_device(request):
    await request.app[DB].remove_device(request.match_info["token"])
    return web.Response(status=204)


# --- images and campaigns ---------------------------------------------------

async def upload(request):
    fields, up = await read_form(request)
    if up is None:
        raise Invalid("multipart upload with a file is required")
    row = await store_upload(request.app, *up, fields.get("manifest"))
    log.info("admin %s uploaded %s (%s %s)", request[ADMIN], row["file_name"], row["kind"],
             row["version"])
    return web.json_response(_file_json(request.app, row), status=201)


def _file_json(app, row):
    """An image as the API shows it: size and sha256 of the image as a board
    installs it, wire_size and wire_sha256 of the file it downloads (the
    same unless compressed), and what compression saved."""
    d = {k: row[k] for k in ("id", "file_name", "kind", "chip", "version", "project_name",
                             "size", "sha256", "wire_size", "wire_sha256")}
    d["compressed"] = row["window_bits"] is not None
    d["window"] = 1 << row["window_bits"] if d["compressed"] else None
    d["saving_percent"] = saving_percent(row["size"], row["wire_size"])
    d["signed"] = os.path.exists(blob_path(app, row["id"], manifest=True))
    return d


def _flag(fields, key):
    v = fields.get(key, "0").lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise Invalid("%s: give 1 or 0" % key)


def _campaign_id(query):
    return parsed_sql_int(query["campaign"], "campaign") if "campaign" in query else None


async def start(request):
    fields, up = await read_form(request)
    store = request.app[DB]
    file_name = short_text(fields.get("fileName"), "fileName", False)
    if up is not None:
        row = await store_upload(request.app, *up, fields.get("manifest"))
    elif file_name:
        row = await store.file_by_name(file_name)
    else:
        raise Invalid("upload a file, or name an uploaded one with fileName=")
    url = fields.get("url") or None
    if url is not None and (not url.startswith(("http://", "https://")) or len(url) > 512
                            or not url.isprintable()):
        raise Invalid("url must be an http(s) URL of at most 512 characters")
    token = short_text(fields.get("token"), "token", False)
    cid = await store.start(row["id"], token=token, user=short_text(fields.get("user"), "user", False),
                      project=short_text(fields.get("project"), "project", False),
                      url=url, allow_downgrade=_flag(fields, "allow_downgrade"),
                      max_attempts=parsed_sql_int(fields.get("max_attempts",
                                                             request.app[CONFIG]["max_attempts"]),
                                                  "max_attempts"))
    c = (await store.status(cid))[0]
    log.info("admin %s started campaign %s: %s %s to %s", request[ADMIN], cid, c["kind"],
             c["version"], "a device" if token else c["target"])
    return web.json_response(c, status=201)


async def stop(request):
    ids = await request.app[DB].stop(_campaign_id(request.query))
    log.info("admin %s stopped campaign(s) %s", request[ADMIN], ids)
    return web.json_response({"stopped": ids})


async def status(request):
    campaigns = await request.app[DB].status(_campaign_id(request.query))
    return web.json_response({"campaigns": campaigns})
