"""Uploaded images: read from a bounded multipart form, recognised as a
firmware image or an app bundle, checked against the signed manifest sent
with them, recorded in the store and kept on disk under their content's id.
"""
import base64
import hashlib
import json
import os
import re

from aiohttp import web

from otatool.serve import reason
from otatool.server.appkeys import CONFIG, DB
from otatool.server.inputs import short_text
from otatool.server.store import Invalid

FORM_SLACK = 64 * 1024  # multipart framing and fields around the file
_MANIFEST_MAX = 2048    # what a board reads of a manifest (lib/ota/manifest.py)
MANIFEST_NAME = "manifest.json"
_MANIFEST_URL = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a bare file name


def describe_upload(data):
    """kind, chip, version, project_name of a firmware image or app bundle;
    ValueError for anything else (a whole flash dump, a text file, ...)."""
    if data[:1] == b"\xe9":
        from otatool.image import describe_image
        d = describe_image(data)
        return {"kind": "firmware", "chip": d.get("chip"), "version": d["version"],
                "project_name": d.get("project_name")}
    from otatool.bundle import read_bundle_header
    h = read_bundle_header(data)
    if h["size"] != len(data):
        raise ValueError("bundle has %d bytes, its header says %d" % (len(data), h["size"]))
    pos = h["header_size"]
    for f in h["files"]:
        if hashlib.sha256(data[pos:pos + f["size"]]).hexdigest() != f["sha256"]:
            raise ValueError("%s: SHA-256 does not match the header" % f["name"])
        pos += f["size"]
    return {"kind": "bundle", "chip": None, "version": h["version"],
            "project_name": h.get("project_name")}


async def read_form(request):
    """(fields, (file name, bytes) or None) of a multipart request, bounded.
    A signed manifest (file or text field `manifest`) is fields["manifest"]."""
    limit = request.app[CONFIG]["max_upload"]
    if request.content_length is not None and request.content_length > limit + FORM_SLACK:
        # Refuse before reading: the body may be gigabytes.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    if not request.content_type.startswith("multipart/"):
        return dict(request.query), None
    try:
        form = await request.post()  # bounded by client_max_size
    except (ValueError, LookupError, RuntimeError) as e:
        # No boundary, broken framing, an unknown charset (LookupError) or
        # transfer encoding (aiohttp raises RuntimeError for that).
        raise Invalid("malformed multipart body: %s" % reason(e)) from None
    try:
        return _fields_and_upload(request.query, form, limit)
    finally:  # also when a field is refused: the files may be on disk
        for value in form.values():
            if isinstance(value, web.FileField):
                value.file.close()


def _fields_and_upload(query, form, limit):
    fields, upload = dict(query), None
    for key, value in form.items():
        if isinstance(value, web.FileField):
            data = value.file.read(limit + 1)
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            if key == "manifest":
                fields[key] = data
            else:
                name = os.path.basename(value.filename or "upload.bin")
                upload = (short_text(name, "file name"), data)
        else:
            fields[key] = value
    return fields, upload


def check_manifest(data, info):
    """The signed fields of a manifest (`otatool sign` output) uploaded with
    the image described by `info`; ValueError unless it describes exactly
    that image and a board could fetch the image from its url. The signature
    is not checked: that is the boards' job, with their public key."""
    if len(data) > _MANIFEST_MAX:
        raise ValueError("larger than the %d bytes a board reads" % _MANIFEST_MAX)
    try:
        env = json.loads(data)
        fields = json.loads(base64.b64decode(env["manifest"], validate=True))
        base64.b64decode(env["sig"], validate=True)
        url = fields["url"]
    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
        raise ValueError("not a signed manifest (`otatool sign` makes one)") from None
    for key in ("kind", "version", "size", "sha256"):
        if fields.get(key) != info[key]:
            raise ValueError("its %s %r is not the image's %r" % (key, fields.get(key), info[key]))
    if not (isinstance(url, str) and (url.startswith(("http://", "https://"))
                                      or _MANIFEST_URL.fullmatch(url) and url != MANIFEST_NAME)):
        raise ValueError("its url %r is neither absolute nor a bare file name" % (url,))
    return fields


def blob_path(app, fid, manifest=False):
    """Where the image `fid` (or its signed manifest) is kept on disk."""
    return os.path.join(app[CONFIG]["files"], fid + (".manifest.json" if manifest else ".bin"))


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


async def store_upload(app, name, data, manifest=None):
    """Check an uploaded image (and its manifest), record it and keep it;
    returns its file row. Invalid for what is not an image or bundle, or a
    manifest that does not describe it."""
    try:
        info = describe_upload(data)
    except ValueError as e:
        raise Invalid("not a firmware image or app bundle: %s" % e)
    info["size"] = len(data)
    info["sha256"] = hashlib.sha256(data).hexdigest()
    if isinstance(manifest, str):
        manifest = manifest.encode()
    if manifest is not None:
        try:
            check_manifest(manifest, info)
        except ValueError as e:
            raise Invalid("manifest: %s" % e)
    row = await app[DB].add_file(name, info)
    _write(blob_path(app, row["id"]), data)
    # Without a new manifest an earlier one stays: the id is the image's
    # content, so it still describes it.
    if manifest is not None:
        _write(blob_path(app, row["id"], manifest=True), manifest)
    return row
