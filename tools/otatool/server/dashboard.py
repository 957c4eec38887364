"""The dashboard (`otatool server` at /): pages for a fleet's owner, beside
the admin and device APIs and drawn from the same store. Sign in and out;
Fleet (every device and its latest campaign); Campaigns (counts per state),
one campaign (per device, refreshed while open) and how to stop it; New
campaign (upload, check, pick a target, start); Images.

Every page needs a signed-in admin (sessions.py); every form that changes
anything carries its session's CSRF token. Refusals are raised and
pages.page_errors shows them as a page.
"""
import importlib.resources
import json
import urllib.parse

from aiohttp import web

from otatool.server.appkeys import CONFIG, DB
from otatool.server.auth import checked_login
from otatool.server.inputs import parsed_sql_int, short_text
from otatool.server.pages import (BROKEN_FORM, PAGE_ROUTE, SKIPPED, STATES, PageRefusal,
                                  render, setup_templates, state_name)
from otatool.server.sessions import (SESSION_COOKIE, SESSION_SECONDS, SIGN_IN_COOKIE,
                                     close_session, current_session, new_token,
                                     open_session, same_token, set_cookie)
from otatool.server.store import Invalid, NotFound
from otatool.server.uploads import read_form, store_upload

_STATIC = {"dashboard.css": "text/css", "campaign.js": "text/javascript"}
_EXPIRED_FORM = ("This form has expired or did not come from this dashboard:"
                 " reload the page and try again.")


def add_dashboard(app):
    """The dashboard's templates and routes on `app`."""
    setup_templates(app)
    app.add_routes(_routes())


def _routes():
    # GET and POST of one path share a name: aiohttp names the path.
    p = PAGE_ROUTE
    return [
        web.get("/", fleet, name=p + "fleet"),
        web.get("/login", sign_in_form, name=p + "sign_in"),
        web.post("/login", sign_in, name=p + "sign_in"),
        web.post("/logout", sign_out, name=p + "sign_out"),
        web.get("/campaigns", campaigns, name=p + "campaigns"),
        web.post("/campaigns", start_campaign, name=p + "campaigns"),
        web.get("/campaigns/new", new_campaign, name=p + "new"),
        web.post("/campaigns/new", upload_for_campaign, name=p + "new"),
        web.get("/campaigns/{id}", campaign, name=p + "campaign"),
        web.get("/campaigns/{id}/live", campaign_live, name=p + "live"),
        web.get("/campaigns/{id}/stop", stop_confirmation, name=p + "stop"),
        web.post("/campaigns/{id}/stop", stop_campaign, name=p + "stop"),
        web.get("/images", images, name=p + "images"),
        web.get("/static/{name}", static_file, name=p + "static"),
    ]


def signed_in(handler):
    """A page for a signed-in admin: anyone else is sent to sign in first.
    The handler is called with the session too."""
    async def page(request):
        session = await current_session(request)
        if session is None:
            if request.method != "GET":
                raise PageRefusal(403, "You are signed out: sign in and try again.")
            raise web.HTTPSeeOther("/login?" + urllib.parse.urlencode({"next": request.path_qs}))
        return await handler(request, session)
    return page


async def posted_form(request):
    """The posted form's text fields (a file sent instead of one is left out)."""
    try:
        form = await request.post()  # bounded by client_max_size
    except (ValueError, LookupError, RuntimeError):  # as uploads.read_form: broken framing
        raise PageRefusal(400, BROKEN_FORM)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def checked_form(request, session):
    """The posted form when it carries the session's CSRF token."""
    form = await posted_form(request)
    if not same_token(session.csrf, form.get("csrf")):
        raise PageRefusal(403, _EXPIRED_FORM)
    return form


# --- signing in and out ---------------------------------------------------------

async def sign_in_form(request, message=None, status=200):
    """The sign-in page; its CSRF token pairs with a cookie, as there is no
    session yet."""
    if await current_session(request) is not None and request.method == "GET":
        raise web.HTTPSeeOther(_local(request.query.get("next")))
    token = request.cookies.get(SIGN_IN_COOKIE) or new_token()
    response = render(request, "sign_in.html", {
        "csrf": token, "message": message, "next": _local(request.query.get("next"))},
        status=status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


def _local(target):
    """`target` if it is a path on this server; else the fleet page (a
    sign-in link must not send the admin elsewhere)."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target and target.isprintable():
        return target
    return "/"


async def sign_in(request):
    form = await posted_form(request)
    if not same_token(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
        raise PageRefusal(403, _EXPIRED_FORM)
    name, password = form.get("name") or "", form.get("password") or ""
    # As the API's Basic header is bounded: a megabyte "password" is no guess to hash.
    plausible = 0 < len(name) <= 128 and 0 < len(password) <= 1024
    try:
        admin = await checked_login(request, name, password) if plausible else None
    except web.HTTPTooManyRequests as e:
        return await sign_in_form(request, "Too many failed sign-ins from your address:"
                                  " try again in %s seconds." % e.headers["Retry-After"], 429)
    if admin is None:
        return await sign_in_form(request, "Wrong name or password.", 401)
    secret = await open_session(request, admin)
    redirect = web.HTTPSeeOther(_local(form.get("next")))
    set_cookie(request, redirect, SESSION_COOKIE, secret, max_age=SESSION_SECONDS)
    redirect.del_cookie(SIGN_IN_COOKIE, path="/")
    raise redirect


@signed_in
async def sign_out(request, session):
    await checked_form(request, session)
    await close_session(request)
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect


# --- fleet ------------------------------------------------------------------------

def latest_campaign_states(statuses):
    """token -> (campaign id, state) of the newest campaign aimed at each
    device; `statuses` is store.status(), newest campaign first."""
    latest = {}
    for c in statuses:
        for d in c["devices"]:
            latest.setdefault(d["token"], (c["campaign"], d["state"]))
    return latest


@signed_in
async def fleet(request, session):
    db = request.app[DB]
    wanted = {k: short_text(request.query.get(k), k, False) for k in ("user", "project", "state")}
    latest = latest_campaign_states(await db.status())
    devices = []
    for d in await db.devices():
        campaign_id, state = latest.get(d["token"], (None, "none"))
        row = dict(d, campaign=campaign_id, state=state)
        if all(v is None or v == row[k] for k, v in (("user_name", wanted["user"]),
                                                     ("project", wanted["project"]),
                                                     ("state", wanted["state"]))):
            devices.append(row)
    projects = sorted({p["name"] for p in await db.projects()})
    filters = [("user", "User", [(u["name"], u["name"]) for u in await db.users()]),
               ("project", "Project", [(p, p) for p in projects]),
               ("state", "State", [(s, state_name(s)) for s in STATES + SKIPPED + ("none",)])]
    return render(request, "fleet.html", {"session": session, "devices": devices,
                                          "wanted": wanted, "filters": filters})


# --- campaigns --------------------------------------------------------------------

@signed_in
async def campaigns(request, session):
    return render(request, "campaigns.html", {"session": session,
                                              "campaigns": await request.app[DB].status()})


async def _campaign_status(request):
    cid = parsed_sql_int(request.match_info["id"], "campaign")
    return (await request.app[DB].status(cid))[0]


def _campaign_page(template):
    """A signed-in page that shows one campaign."""
    @signed_in
    async def page(request, session):
        c = await _campaign_status(request)
        return render(request, template, {"session": session, "c": c})
    return page


campaign = _campaign_page("campaign.html")
# the changing part of a campaign's page, fetched again and again while it is open
campaign_live = _campaign_page("campaign_live.html")
stop_confirmation = _campaign_page("stop.html")


@signed_in
async def stop_campaign(request, session):
    await checked_form(request, session)
    c = await _campaign_status(request)
    await request.app[DB].stop(c["campaign"])
    raise web.HTTPSeeOther("/campaigns/%d" % c["campaign"])


# --- a new campaign ---------------------------------------------------------------

@signed_in
async def new_campaign(request, session):
    return render(request, "upload.html", {"session": session, "message": None})


@signed_in
async def upload_for_campaign(request, session):
    """The uploaded image checked as the API checks it, then shown with the
    choices that start a campaign for it."""
    fields, up = await read_form(request)
    if not same_token(session.csrf, fields.get("csrf")):
        raise PageRefusal(403, _EXPIRED_FORM)
    if up is None:
        return render(request, "upload.html", {"session": session,
                                               "message": "Choose a file to upload."}, status=400)
    try:
        row = await store_upload(request.app, *up, fields.get("manifest") or None)
    except Invalid as e:
        return render(request, "upload.html", {"session": session, "message": str(e)},
                      status=400)
    return await _start_form(request, session, row)


async def _start_form(request, session, row, message=None, status=200):
    db = request.app[DB]
    return render(request, "start.html", {
        "session": session, "file": row, "message": message, "devices": await db.devices(),
        "users": await db.users(), "projects": await db.projects(),
        "max_attempts": request.app[CONFIG]["max_attempts"]}, status=status)


def target_fields(choice):
    """token, user and project for store.start from the Target select's
    value: JSON, so that any name (with a colon or a slash) comes back whole."""
    try:
        kind, *names = json.loads(choice)
    except (TypeError, ValueError):
        raise Invalid("choose a target")
    shapes = {"all": 0, "device": 1, "user": 1, "project": 2}
    if kind not in shapes or len(names) != shapes[kind] or not all(
            isinstance(n, str) for n in names):
        raise Invalid("choose a target")
    if kind == "device":
        return {"token": names[0]}
    return dict(zip(("user", "project"), names))


@signed_in
async def start_campaign(request, session):
    form = await checked_form(request, session)
    db = request.app[DB]
    row = await db.file(short_text(form.get("file"), "file") or "")
    if row is None:
        raise NotFound("no such image: upload it again")
    try:
        cid = await db.start(row["id"], allow_downgrade=form.get("allow_downgrade") == "1",
                          max_attempts=parsed_sql_int(form.get("max_attempts"), "max_attempts"),
                          **target_fields(form.get("target")))
    except (Invalid, NotFound) as e:
        return await _start_form(request, session, row, str(e), 400)
    raise web.HTTPSeeOther("/campaigns/%d" % cid)


# --- images -----------------------------------------------------------------------

@signed_in
async def images(request, session):
    db = request.app[DB]
    used_by = {}
    for c in await db.campaigns():
        used_by.setdefault(c["file_id"], []).append(c)
    return render(request, "images.html", {"session": session, "files": await db.files(),
                                           "used_by": used_by})


async def static_file(request):
    """The stylesheet and the script: a fixed list, read from the package."""
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    data = importlib.resources.files("otatool.server").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=_STATIC[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
