"""The dashboard's sign-in sessions and the CSRF tokens of its forms.

A session lives in the database (the table `sessions`), so every server on
it knows it at once: behind a load balancer the next request may reach
another server, and a restart signs no one out. Its row holds the SHA-256
of the cookie's secret, never the secret, so what the database shows (a
backup, a leak) opens no session. The cookie is HttpOnly, SameSite=Strict,
Secure over HTTPS. A session ends when its admin signs out (on any server),
after SESSION_SECONDS, or as soon as the admin's password changes
(`otatool server --reset-password`, which reaches every server through the
same database); an admin has at most _SESSIONS_PER_ADMIN open, the oldest
ends first. Each session has its own CSRF token, kept in its row; the
sign-in form, which has no session yet, pairs its token with a cookie.
"""
import collections
import hashlib
import hmac
import secrets

from otatool.server.appkeys import DB

SESSION_COOKIE = "ota_session"
SIGN_IN_COOKIE = "ota_sign_in"
SESSION_SECONDS = 8 * 3600
_SESSIONS_PER_ADMIN = 50    # beyond, the admin's oldest session ends

Session = collections.namedtuple("Session", "admin csrf")


def new_token():
    """A secret for a cookie or a form: 256 random bits."""
    return secrets.token_urlsafe(32)


def _sha256(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


async def open_session(request, admin):
    """A new session for `admin`, who just proved their password; -> the
    secret its cookie carries."""
    secret = new_token()
    await request.app[DB].open_session(_sha256(secret), admin, new_token(), SESSION_SECONDS,
                                       _SESSIONS_PER_ADMIN)
    return secret


async def current_session(request):
    """The request's Session, if its cookie names one still open; else None."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    row = await request.app[DB].session(_sha256(secret))
    return Session(row["admin"], row["csrf"]) if row else None


async def close_session(request):
    """The request's session ends, for every server."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await request.app[DB].end_session(_sha256(secret))


def set_cookie(request, response, name, value, max_age):
    """A cookie only this site's own pages send back, never readable by a script."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="Strict", secure=request.secure)


def same_token(expected, given):
    """True when a form's CSRF token is the one expected (in constant time)."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(
        expected.encode(), given.encode("utf-8", "surrogateescape"))
