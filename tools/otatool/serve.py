"""`otatool serve DIR`: a development update server for static files.

It does what the board's client needs from any production server (nginx, S3,
a CDN): Content-Length, a single `Range` (206, 416 when unsatisfiable), a
strong ETag with If-Range and If-None-Match, HEAD. With `--tls` it makes,
once, a local CA and a server certificate for localhost, 127.0.0.1 and ::1
(plus the --bind address) and prints the CA file to give the board as
`cert_pem`.

Compressed updates (`otatool image compress`) are files like any other: a
board resumes one with a Range from the start of a block.

Signed manifests are served like any file, as application/json when the name
ends in .json. Put the image and its manifest side by side, the manifest
naming the image relatively (`otatool sign app-1.2.0.bin --url app-1.2.0.bin`
writes app-1.2.0.manifest.json), and point the board's url at a manifest:
either that one, or one fixed name each release overwrites
(`-o DIR/latest.manifest.json`), so boards configured once find every new
release; a board refuses a manifest that is not newer than what it runs.

The standard library's ThreadingHTTPServer rather than aiohttp: a thread per
connection keeps a slow board from blocking the others, which is all a
development server needs; the range and validator logic stays explicit and
synchronous (it is the reference for what the client expects of a server);
and tests get a server in a thread with no event loop to manage.

Python API for tests and demos:

    server, base_url, ca_pem = start_server(directory, port=0, tls=False)
    ...
    server.shutdown()
"""
import datetime
import email.utils
import ipaddress
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from otatool.cli import CliError, CliFailure

DEFAULT_CERT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "otatool", "tls")
CA_FILE, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_FILE, SERVER_KEY = "server.pem", "server-key.pem"
LOCAL_NAMES = ["localhost", "127.0.0.1", "::1"]
_COPY = 64 * 1024
_SOCKET_TIMEOUT = 60  # a board silent this long is gone


def check_port(port):
    """`port` if it is a TCP port number, else ValueError saying which are."""
    if not 0 <= port <= 65535:
        raise ValueError("port %d is out of range: give 0..65535 (0: any free port)" % port)
    return port


def reason(error):
    """What went wrong, in one line: an OS error's strerror (without the
    errno and file name the message names itself), else the error's text."""
    return " ".join(str(getattr(error, "strerror", None) or error).split())


def cannot_listen(host, port, error):
    """The one-line CliFailure for a socket that could not be bound."""
    errno = getattr(error, "errno", None)
    # asyncio words it "error while attempting to bind on address (...): ...";
    # the errno says it plainly. A failed name lookup has a negative one.
    why = os.strerror(errno) if errno and errno > 0 else reason(error)
    return CliFailure("cannot listen on %s port %s: %s" % (host, port, why))


def byte_range(header, size):
    """(start, end) of a single `bytes=` range (end exclusive); None to ignore
    the header (RFC 9110 lets a server ignore what it does not support, such
    as several ranges); "unsatisfiable" for a 416."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    try:
        if first == "":
            start, end = max(size - int(last), 0), size
        else:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    if start < 0 or start >= size or start >= end:
        return "unsatisfiable"
    return start, end


def file_etag(st):
    # Strong: changes whenever the file's size or modification time does.
    return '"%x-%x"' % (st.st_size, st.st_mtime_ns)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Range windows reuse a connection
    server_version = "otatool-serve"

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        t0 = time.monotonic()
        path = self._file()
        if path is None:
            return self._finish(t0, 404, 0, b"not found\n")
        st = os.stat(path)
        size, etag = st.st_size, file_etag(st)
        ctype = "application/json" if path.endswith(".json") else "application/octet-stream"
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": ctype,
                   "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
        if etag in [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]:
            return self._finish(t0, 304, 0, None, headers)
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        # If-Range: the range only if the client still has this entity.
        if rng and self.headers.get("If-Range", etag) == etag:
            r = byte_range(rng, size)
            if r == "unsatisfiable":
                return self._finish(t0, 416, 0, b"", {"Content-Range": "bytes */%d" % size})
            if r:
                (start, end), status = r, 206
                headers["Content-Range"] = "bytes %d-%d/%d" % (start, end - 1, size)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        sent = 0
        try:
            if body:
                with open(path, "rb") as f:
                    f.seek(start)
                    while sent < end - start:
                        chunk = f.read(min(_COPY, end - start - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
        finally:  # logged with the bytes that went out, even when the board left
            self._log(t0, status, sent)

    def _file(self):
        # The file under the served directory, or None (no directory
        # listings, nothing outside the directory).
        root = os.path.realpath(self.server.directory)
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        if "\0" in rel:  # no file has one; os.path would raise
            return None
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            return None
        return path

    def _finish(self, t0, status, sent, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self._log(t0, status, sent)

    def _log(self, t0, status, sent):
        # One line per request: who, what, status, body bytes, seconds. The
        # path is the client's: escaped, it cannot forge lines or move the cursor.
        path = self.path.encode("unicode_escape").decode("ascii")
        self.server.log("%s %s %s %d %d bytes %.3f s" % (
            self.client_address[0], self.command, path, status, sent, time.monotonic() - t0))

    def log_message(self, fmt, *args):
        pass  # the standard per-request line is replaced by _log

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # a board that went away mid-download is normal here


class DevServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, directory, ssl_context=None, log=None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.directory = directory
        self.ssl_context = ssl_context
        self.log = log or (lambda line: print(line, flush=True))
        super().__init__(address, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's thread, not in accept().
        request.settimeout(_SOCKET_TIMEOUT)
        if self.ssl_context:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as e:
                self.log("%s TLS handshake failed: %s" % (client_address[0], e))
                return
        super().finish_request(request, client_address)

    def shutdown(self):
        super().shutdown()
        self.server_close()


# --- certificates -------------------------------------------------------------

def _names_for(bind, extra=()):
    names = list(LOCAL_NAMES)
    for n in [bind] + list(extra):
        if n not in ("", "0.0.0.0", "::") and n not in names:
            names.append(n)
    return names


def _san(names):
    from cryptography import x509
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _write_pem(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_certs(cert_dir, names=LOCAL_NAMES):
    """The local CA (made once) and a server certificate it signed for
    `names`, reissued when a name is missing. Returns (ca_pem, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(cert_dir, exist_ok=True)
    paths = [os.path.join(cert_dir, n) for n in (CA_FILE, CA_KEY, SERVER_FILE, SERVER_KEY)]
    ca_path, ca_key_path, cert_path, key_path = paths
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM

    def private(key):
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    if not (os.path.exists(ca_path) and os.path.exists(ca_key_path)):
        # P-256: small, and fast in the boards' mbedtls.
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otatool development CA")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .sign(key, hashes.SHA256()))
        _write_pem(ca_key_path, private(key), private=True)
        _write_pem(ca_path, ca.public_bytes(pem))
        for p in (cert_path, key_path):  # signed by an older CA
            if os.path.exists(p):
                os.remove(p)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if set(_san(names)) <= set(have) and cert.not_valid_after_utc > now + datetime.timedelta(days=1):
            return ca_path, cert_path, key_path
    with open(ca_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_pem(key_path, private(key), private=True)
    _write_pem(cert_path, cert.public_bytes(pem))
    return ca_path, cert_path, key_path


# --- running ------------------------------------------------------------------

def make_server(directory, port=0, tls=False, cert_dir=None, bind="127.0.0.1", log=None, names=()):
    """A DevServer (not yet serving) and its base URL and CA file (or None).
    names: more host names or addresses for the server certificate."""
    if not os.path.isdir(directory):
        raise CliFailure("not a directory: %s" % directory)
    ctx = ca_path = None
    if tls:
        ca_path, ctx = _tls_context(cert_dir or DEFAULT_CERT_DIR, _names_for(bind, names))
    try:
        server = DevServer((bind, port), directory, ctx, log)
    except (OSError, OverflowError) as e:  # in use, not an address of this host, no such name
        raise cannot_listen(bind, port, e)
    host = server.server_address[0]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    host = "[%s]" % host if ":" in host else host
    base_url = "%s://%s:%d" % ("https" if tls else "http", host, server.server_address[1])
    return server, base_url, ca_path


def _tls_context(cert_dir, names):
    """(CA file, server SSLContext) from the certificates in `cert_dir`."""
    if os.path.exists(cert_dir) and not os.path.isdir(cert_dir):
        raise CliFailure("--cert-dir %s is not a directory" % cert_dir)
    try:
        ca_path, cert, key = ensure_certs(cert_dir, names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as e:  # unwritable, or a damaged PEM file
        raise CliFailure("cannot use --cert-dir %s: %s" % (cert_dir, reason(e)))
    return ca_path, ctx


def start_server(directory, port=0, tls=False, cert_dir=None, bind="127.0.0.1", log=None):
    """Serve `directory` from a thread. Returns (server, base_url, ca_pem_path
    or None); server.shutdown() stops it and closes the socket."""
    server, base_url, ca_path = make_server(directory, port, tls, cert_dir, bind, log)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     name="otatool-serve", daemon=True).start()
    return server, base_url, ca_path


def run(args):
    try:
        check_port(args.port)
    except ValueError as e:
        raise CliError("--port: %s" % e)
    server, base_url, ca_path = make_server(args.directory, args.port, args.tls, args.cert_dir,
                                            args.bind, names=args.cert_name)
    print("otatool serve: %s at %s/" % (os.path.abspath(args.directory), base_url), flush=True)
    if ca_path:
        print("CA certificate for the board (cert_pem): %s" % ca_path, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub):
    p = sub.add_parser("serve", help="development update server for a directory",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("directory", metavar="DIR", help="directory of images and bundles to serve")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any free)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for boards on the LAN)")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a local CA made on first use")
    p.add_argument("--cert-dir", default=None,
                   help="where the CA and server certificate live (default %s)" % DEFAULT_CERT_DIR)
    p.add_argument("--cert-name", action="append", default=[], metavar="NAME",
                   help="another host name or IP the board uses to reach this server (repeatable)")
    p.set_defaults(func=run)
