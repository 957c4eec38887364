"""A loopback HTTP/1.1 server that misbehaves on purpose, for client tests.

Each path is a route with knobs; every request is logged (path, Range and
If-Range asked, status, Content-Length declared, body bytes really sent,
connection number), so a test can prove what went over the wire, e.g. that a
resume fetched only the missing bytes.

    with FaultServer() as srv:
        srv.route("/fw.bin", body, drop_at=5000)      # cut once at byte 5000
        url = srv.url("/fw.bin")
        ... run the client ...
        assert srv.sent("/fw.bin") == len(body)

Knobs of route() (offsets are positions in the entity, so a resume that
starts at or before them meets them again):
    etag           ETag header; default derived from the body, None: no ETag
    drop_at, drop_times      close the connection at that offset, the first
                             `drop_times` requests that reach it (-1: always);
                             a list of offsets: a cut at each, once
    stall_at, stall_times, stall_s   stop sending at that offset for stall_s
                             seconds (then close)
    cl_delta       the server believes the entity is len(body) + cl_delta long:
                   > 0 declares more than it sends; < 0 sends the whole body
                   after declaring less
    chunked        send Transfer-Encoding: chunked in chunks of this size,
                   with a chunk extension and a trailer
    redirect       (status, location) answer instead of the body
    status, error_body       answer with this status and body (e.g. 404, or
                   an HTML page with 200)
    new_body, change_after   from request number change_after (0-based) on,
                   serve new_body (and its ETag): the image changed
    ignore_range   answer every request with 200 and the whole body
    range_shift    answer a Range request with the bytes from start + range_shift
                   (a 206 that does not continue where the client is)
    head_stall     read the request and never answer (for stall_s seconds)
    close_after    close the connection after each answer without saying so
                   (no "Connection: close"), as servers do with idle ones
    extra_head     raw header lines (str, sent as they are: control characters
                   included) added to the answer's head, redirects included
    head_forever   after the status line, header lines of 64 bytes without
                   end, this many seconds apart (0: as fast as the client reads)
    head_drip      after the status line, one byte of a header line every this
                   many seconds, without end (never a line feed)
    trickle        send the body one byte every this many seconds

Bounded: every socket has a timeout, stalls end at stall_s, and the server
stops by itself after `lifetime` seconds (endless heads and trickles too).
The log also has, per request, `head_sent`: bytes of an endless head sent.
"""
import hashlib
import posixpath
import socket
import ssl
import threading
import time

_IO_TIMEOUT = 10
_SETTLE_S = 2   # how long requests() waits for answers still being sent


class FaultServer:
    def __init__(self, host="127.0.0.1", ssl_context=None, lifetime=120):
        self.routes = {}
        self.log = []
        self._ctx = ssl_context
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._lock = threading.Lock()
        self._conns = 0
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._ls = socket.socket(fam, socket.SOCK_STREAM)
        self._ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._ls.bind((host, 0))
        self._ls.listen(16)
        self._ls.settimeout(0.2)
        self.host = host
        self.port = self._ls.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    # -- test API ---------------------------------------------------------

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        try:
            self._ls.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        except OSError:
            pass
        self._thread.join(5)
        self._ls.close()

    def route(self, path, body=b"", **knobs):
        r = dict(body=bytes(body), etag=_etag(body), drop_at=None, drop_times=1, stall_at=None,
                 stall_times=1, stall_s=30, cl_delta=0, chunked=0, redirect=None, status=None,
                 error_body=b"", new_body=None, change_after=None, ignore_range=False,
                 head_stall=False, range_shift=0, close_after=False, extra_head=(),
                 head_forever=None, head_drip=None, trickle=None, requests=0, drops=0,
                 stalls=0)
        unknown = set(knobs) - set(r)
        if unknown:
            raise TypeError("unknown knobs: %s" % ", ".join(sorted(unknown)))
        r.update(knobs)
        self.routes[path] = r
        return r

    def url(self, path, scheme=None):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d%s" % (scheme or ("https" if self._ctx else "http"), host, self.port, path)

    @property
    def connections(self):
        # Connections accepted so far (0: nothing ever reached the server).
        return self._conns

    def requests(self, path):
        # The requests for `path`, once each answer's figures are final: the
        # client can hold the last byte before sendall() returns here.
        deadline = time.monotonic() + _SETTLE_S
        while not all(e["settled"] for e in self.log) and time.monotonic() < deadline:
            time.sleep(0.005)
        return [e for e in self.log if e["path"] == path]

    def sent(self, path):
        return sum(e["sent"] for e in self.requests(path))

    # -- serving ----------------------------------------------------------

    def _accept_loop(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._lock:
                self._conns += 1
                n = self._conns
            threading.Thread(target=self._serve_conn, args=(conn, n), daemon=True).start()

    def _serve_conn(self, conn, n):
        conn.settimeout(_IO_TIMEOUT)
        try:
            if self._ctx:
                conn = self._ctx.wrap_socket(conn, server_side=True)
            f = conn.makefile("rb")
            while not self._stop.is_set():
                req = _read_request(f)
                if req is None or not self._answer(conn, req, n):
                    break
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _wait(self, seconds):
        self._stop.wait(max(0, min(seconds, self._deadline - time.monotonic())))

    def _answer(self, conn, req, conn_no):
        # Send one response; True if the connection may carry another request.
        method, path, headers = req
        rec = dict(path=path, conn=conn_no, range=headers.get("range"), if_range=headers.get("if-range"),
                   headers=headers, status=None, declared=None, sent=0, fault=None, head_sent=0,
                   settled=False)
        with self._lock:
            self.log.append(rec)
        try:
            return self._respond(conn, rec, method, path, headers)
        finally:
            rec["settled"] = True

    def _respond(self, conn, rec, method, path, headers):
        r = self.routes.get(posixpath.normpath(path.split("?")[0]))  # as servers resolve ../
        keep = headers.get("connection", "").lower() != "close"
        if r is None:
            return self._simple(conn, rec, 404, b"no such route\n", keep)
        index = r["requests"]
        r["requests"] += 1
        if r["head_stall"]:
            rec["settled"] = True  # nothing is sent
            self._wait(r["stall_s"])
            return False
        if r["head_forever"] is not None or r["head_drip"] is not None:
            self._endless_head(conn, rec, r)
            return False
        if r["redirect"]:
            status, loc = r["redirect"]
            return self._simple(conn, rec, status, b"", keep,
                                ["Location: %s" % loc] + list(r["extra_head"]))
        if r["status"] is not None:
            return self._simple(conn, rec, r["status"], r["error_body"], keep, ["Content-Type: text/html"])
        body, etag = r["body"], r["etag"]
        if r["change_after"] is not None and index >= r["change_after"]:
            body, etag = r["new_body"], _etag(r["new_body"])
        size = len(body) + r["cl_delta"]  # what the server claims
        start, end, status = 0, size, 200
        rng = headers.get("range")
        if rng and not r["ignore_range"] and headers.get("if-range", etag) == etag:
            start, end = _parse_range(rng, size)
            if start >= size or start >= end:
                return self._simple(conn, rec, 416, b"", keep, ["Content-Range: bytes */%d" % size])
            status = 206
            start = min(start + r["range_shift"], size - 1)
        head = ["HTTP/1.1 %d %s" % (status, "OK" if status == 200 else "Partial Content")]
        if etag:
            head.append("ETag: %s" % etag)
        if status == 206:
            head.append("Content-Range: bytes %d-%d/%d" % (start, end - 1, size))
        if r["chunked"]:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append("Content-Length: %d" % (end - start))
            rec["declared"] = end - start
        head += list(r["extra_head"])
        rec["status"] = status
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if method == "HEAD":
            return keep
        # The bytes this response really has, and where a fault cuts them.
        have_end = len(body) if r["cl_delta"] < 0 else min(end, len(body))
        cut, fault = have_end, None
        if isinstance(r["drop_at"], list):  # several cut points, each once
            for at in r["drop_at"]:
                if start <= at < min(end, cut):
                    cut, fault = at, "drop"
            if fault:
                r["drop_at"].remove(cut)
        for kind in ("drop", "stall"):
            at = r[kind + "_at"]
            times, done = r[kind + "_times"], r[kind + "s"]
            if isinstance(at, int) and start <= at < max(end, start + 1) and at < cut \
                    and (times < 0 or done < times):
                cut, fault = at, kind
        if fault:
            r[fault + "s"] += 1
            rec["fault"] = fault
        data = body[start:max(start, cut)]
        if r["chunked"]:
            self._send_chunked(conn, rec, data, r["chunked"], fault is None)
        elif r["trickle"] is not None:
            for i in range(len(data)):
                if not self._running():
                    return False
                conn.sendall(data[i:i + 1])
                rec["sent"] += 1
                self._wait(r["trickle"])
        else:
            conn.sendall(data)
            rec["sent"] = len(data)
        if fault == "stall":
            rec["settled"] = True  # all it sends is sent
            self._wait(r["stall_s"])
        return fault is None and keep and have_end >= end and r["cl_delta"] >= 0 \
            and not r["close_after"]

    def _running(self):
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _endless_head(self, conn, rec, r):
        # A status line, then header bytes until the client gives up (or the
        # server stops): whole lines, or one byte at a time.
        rec["status"] = 200
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        i = 0
        while self._running():
            if r["head_drip"] is not None:
                piece, pause = b"a" if i else b"X-Drip: a", r["head_drip"]
            else:
                piece, pause = b"X-Filler-%08d: %s\r\n" % (i, b"f" * 43), r["head_forever"]
            conn.sendall(piece)
            rec["head_sent"] += len(piece)
            i += 1
            if pause:
                self._wait(pause)

    def _send_chunked(self, conn, rec, data, size, last):
        for i in range(0, len(data), size):
            piece = data[i:i + size]
            ext = ";note=x" if i // size % 2 else ""
            conn.sendall(b"%x%s\r\n" % (len(piece), ext.encode()) + piece + b"\r\n")
            rec["sent"] += len(piece)
        if last:
            conn.sendall(b"0\r\nX-Trailer: done\r\n\r\n")

    def _simple(self, conn, rec, status, body, keep, extra=()):
        rec["status"] = status
        head = ["HTTP/1.1 %d X" % status, "Content-Length: %d" % len(body)] + list(extra)
        if not keep:
            head.append("Connection: close")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        return keep


def _etag(body):
    return '"%s"' % hashlib.sha256(body or b"").hexdigest()[:16] if body is not None else None


def _parse_range(header, size):
    spec = header.split("=", 1)[1].strip()
    first, last = spec.split("-", 1)
    if first == "":
        return max(size - int(last), 0), size
    return int(first), (min(int(last) + 1, size) if last else size)


def _read_request(f):
    # (method, path, {lower-case header: value}) or None at EOF.
    line = f.readline(8192)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        line = f.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return method, path, headers
