"""The dashboard's sign-in sessions and the CSRF tokens of its forms.

A session lives in the server's memory only (a restart signs everyone out,
nothing about it reaches the database) and behind an HttpOnly, SameSite=Strict
cookie, Secure over HTTPS. It ends when its admin signs out, after
SESSION_SECONDS, or as soon as the admin's password changes
(`otatool server --reset-password`). Each session has its own CSRF token;
the sign-in form, which has no session yet, pairs its token with a cookie.
"""
import hmac
import secrets
import time

from otatool.server.appkeys import DB, SESSIONS

SESSION_COOKIE = "ota_session"
SIGN_IN_COOKIE = "ota_sign_in"
SESSION_SECONDS = 8 * 3600
_SESSIONS_MAX = 1000    # beyond, the oldest session is forgotten


def new_token():
    """A secret for a cookie or a form: 256 random bits."""
    return secrets.token_urlsafe(32)


class Session:
    def __init__(self, admin, password_hash, expires):
        self.admin, self.password_hash, self.expires = admin, password_hash, expires
        self.csrf = new_token()


class Sessions:
    """The open sessions, by the secret their cookie carries."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._open = {}

    def open(self, admin, password_hash):
        """A new session for `admin`; -> (its cookie's secret, the Session)."""
        while len(self._open) >= _SESSIONS_MAX:
            del self._open[next(iter(self._open))]
        secret = new_token()
        self._open[secret] = Session(admin, password_hash, self.clock() + SESSION_SECONDS)
        return secret, self._open[secret]

    def get(self, secret):
        session = self._open.get(secret or "")
        if session is not None and session.expires <= self.clock():
            del self._open[secret]
            return None
        return session

    def close(self, secret):
        self._open.pop(secret or "", None)


async def current_session(request):
    """The request's session, if its cookie names one whose admin still has
    the password they signed in with; else None."""
    sessions = request.app[SESSIONS]
    secret = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(secret)
    if session is None:
        return None
    if await request.app[DB].admin_hash(session.admin) != session.password_hash:
        sessions.close(secret)
        return None
    return session


def set_cookie(request, response, name, value, max_age):
    """A cookie only this site's own pages send back, never readable by a script."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="Strict", secure=request.secure)


def same_token(expected, given):
    """True when a form's CSRF token is the one expected (in constant time)."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(
        expected.encode(), given.encode("utf-8", "surrogateescape"))
