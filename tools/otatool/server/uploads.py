"""Uploaded images: read from a bounded multipart form, recognised as a
firmware image or an app bundle (either one plain or compressed), checked
against the signed manifest sent with them, recorded in the store and kept
on disk, as uploaded, under their content's id.
"""
import asyncio
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


def describe_upload(data, limit):
    """What a board installs from an uploaded firmware image or app bundle,
    plain or compressed (otatool.compressed): kind, chip, version,
    project_name, size and sha256 of the image as installed; wire_size,
    wire_sha256 of the file as uploaded, kept and downloaded; window_bits
    when compressed, else None. A compressed upload's header is checked and
    what it promises bounded by `limit` (the largest plain upload) before it
    is inflated, block by block, each block's output bounded. ValueError
    with one line for anything else (a flash dump, a text file, a
    decompression bomb, ...)."""
    from otatool.compressed import is_compressed
    from otatool.image import describe_update, inflate
    wire_sha256 = sha256 = hashlib.sha256(data).hexdigest()
    info = {"wire_size": len(data), "wire_sha256": wire_sha256, "window_bits": None}
    if is_compressed(data):
        try:
            header, data = inflate(data, limit)
        except ValueError as e:
            raise ValueError("bad compressed update: %s" % e) from None
        info["window_bits"] = header.window_bits
        sha256 = header.sha256.hex()  # decompress() checked it
        what = "a compressed update of no firmware image or app bundle: %s"
    else:
        what = "not a firmware image or app bundle: %s"
    try:
        d = describe_update(data)
    except ValueError as e:
        raise ValueError(what % e) from None
    info.update(kind=d["kind"], chip=d["chip"], version=d["version"],
                project_name=d.get("project_name"), size=len(data), sha256=sha256)
    return info


async def read_form(request):
    """(fields, (file name, bytes) or None) of a multipart request, bounded.
    A signed manifest (file or text field `manifest`) is fields["manifest"]."""
    limit = request.app[CONFIG]["max_upload"]
    if request.content_length is not None and request.content_length > limit + FORM_SLACK:
        # Refuse before reading: the body may be gigabytes.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        multipart = request.content_type.startswith("multipart/")
    except LookupError:  # a Content-Type CPython's email parser trips over (IndexError)
        raise Invalid("malformed Content-Type header") from None
    if not multipart:
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
    # A compressed file's manifest also signs the bytes a board downloads
    # (`otatool sign` of the compressed file adds them); a plain one's must not.
    compressed = info["window_bits"] is not None
    for key, value in (("compressed_size", info["wire_size"]),
                       ("compressed_sha256", info["wire_sha256"])):
        if fields.get(key) != (value if compressed else None):
            raise ValueError("its %s %r is not the uploaded file's %r"
                             % (key, fields.get(key), value if compressed else None))
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
        # Off the event loop: checking (and inflating) a few MiB takes a while.
        info = await asyncio.get_running_loop().run_in_executor(
            None, describe_upload, data, app[CONFIG]["max_upload"])
    except ValueError as e:
        raise Invalid(str(e))
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
