"""What a request carries, checked before it reaches the store: a JSON body
read within a bound, short printable strings, integers SQLite can hold.
Admin and device handlers both refuse bad input with these, as 400s (store
Invalid) or 413s.
"""
import json

from aiohttp import web

from otatool.server.store import Invalid

_JSON_MAX = 64 * 1024   # admin JSON bodies
_FIELD_MAX = 128        # token, version, build, chip
_SQL_INT_MAX = (1 << 63) - 1  # SQLite's INTEGER: a larger id would overflow, not just miss


async def json_body(request, limit=_JSON_MAX):
    """The request's body, a JSON object of at most `limit` bytes."""
    body = bytearray()
    while len(body) <= limit:  # read() may return less than asked
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    try:
        data = json.loads(body)  # bytes: UTF-8 (or -16, -32) checked by json
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
        raise Invalid("body must be JSON")
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object")
    return data


def short_text(value, name, required=True):
    """`value` if it is a short printable string (None when absent and not
    required); the one check for every string that reaches the store, so no
    control character or lone surrogate gets in (SQLite cannot encode one)."""
    if value is None or value == "":
        if required:
            raise Invalid("%s is required" % name)
        return None
    if not isinstance(value, str) or len(value) > _FIELD_MAX or not value.isprintable():
        raise Invalid("%s: a string of at most %d printable characters" % (name, _FIELD_MAX))
    return value


def sql_int(value, name):
    """`value` if it is an integer SQLite can store (0..2**63-1): a larger
    one would not miss, it would overflow."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _SQL_INT_MAX:
        raise Invalid("%s must be an integer from 0 to %d" % (name, _SQL_INT_MAX))
    return value


def parsed_sql_int(text, name):
    """sql_int of a query or form field."""
    try:
        value = int(text)
    except (TypeError, ValueError):  # ValueError also for over 4300 digits
        raise Invalid("%s must be an integer" % name) from None
    return sql_int(value, name)
