"""The campaign server's files (tools/otatool/server/*.py) import one way,
from the faces down to the formats: command -> runner -> app -> admin and
device APIs and the dashboard -> middleware, uploads, sessions and pages ->
shared helpers -> store and config -> schema. A file imports files of its own layer or of lower ones, never in
a circle. Imports are read from the source (ast), top-level and
function-level alike, absolute (`otatool.server.x`), relative (`.x`) and
`from otatool import server` (the package, the top layer) alike; what is
not a file of the server (aiohttp, otatool.serve, ...) does not count."""
import ast
import os

from conftest import REPO
from test_shim_layers import cycle

SERVER = os.path.join(REPO, "tools", "otatool", "server")
PACKAGE = "otatool.server"

# file -> layer; an import may go to the same layer or a lower one
LAYERS = {
    # 0: the database schema
    "migrations": 0,
    # 1: state and settings: the store (who gets which update, when) and
    # the configuration
    "store": 1, "config": 1,
    # 2: what the handlers share: the application's keys, checked request
    # inputs, logs with nothing secret
    "appkeys": 2, "inputs": 2, "logs": 2,
    # 3: the middleware (one JSON error shape, admin authentication, the
    # dashboard's error pages), uploaded images, the dashboard's sessions
    # and how its pages are made
    "errors": 3, "auth": 3, "uploads": 3, "sessions": 3, "pages": 3,
    # 4: the faces: the admin and device APIs, the dashboard
    "admin_api": 4, "device_api": 4, "dashboard": 4,
    # 5: the application: routes and middleware wired together
    "app": 5,
    # 6: running it: TLS, the foreground server, ServerThread
    "runner": 6,
    # 7: `otatool server`
    "command": 7,
    # 8: the package's public names
    "__init__": 8,
}


def server_files(directory=SERVER):
    return sorted(n[:-3] for n in os.listdir(directory) if n.endswith(".py"))


def _file_of(dotted):
    """The server file a dotted module name (or a name imported from the
    package) stands for, or None when it is not one."""
    if dotted == PACKAGE:
        return "__init__"
    if dotted.startswith(PACKAGE + "."):
        return dotted[len(PACKAGE) + 1:].split(".")[0]
    return None


def _from_package(names, known):
    """`from <the package> import names`: files, or else the package itself."""
    return {n if n in known else "__init__" for n in names}


def _imported(node, known):
    """The server files (or names not yet checked against `known`) that
    one node of a syntax tree imports."""
    if isinstance(node, ast.Import):
        return {_file_of(a.name) for a in node.names}
    if isinstance(node, ast.ImportFrom):
        names = [a.name for a in node.names]
        if node.level == 1:  # from . import x, from .x import y
            return {node.module.split(".")[0]} if node.module else _from_package(names, known)
        if node.module == PACKAGE:
            return _from_package(names, known)
        if node.module == "otatool" and "server" in names:
            return {"__init__"}
        return {_file_of(node.module or "")}
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and ast.unparse(node.func) in ("__import__", "importlib.import_module")):
        return {_file_of(node.args[0].value)}
    return set()


def imports(path, known):
    """The server files in `known` that the source at `path` imports."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return set().union(*(_imported(node, known) for node in ast.walk(tree))) & set(known)


def graph(directory=SERVER):
    names = server_files(directory)
    return {m: imports(os.path.join(directory, m + ".py"), names) - {m} for m in names}


def upward(g, layers):
    """Each import in graph `g` that goes to a higher layer, as a line."""
    return sorted("%s (%d) imports %s (%d)" % (m, layers[m], n, layers[n])
                  for m, deps in g.items() for n in deps if layers[n] > layers[m])


def test_every_server_file_has_a_layer():
    assert server_files() == sorted(LAYERS)


def test_the_servers_files_import_only_their_own_layer_or_lower_ones():
    g = graph()
    assert g["app"] >= {"admin_api", "device_api"}  # the reading sees the imports
    assert upward(g, LAYERS) == []


def test_the_servers_files_import_no_cycle():
    # within a layer too: the layers alone would allow one there
    assert cycle(graph()) is None


def test_the_faces_stand_apart_and_the_store_knows_only_its_schema():
    g = graph()
    faces = {"admin_api", "device_api", "dashboard"}
    for face in faces:
        assert not g[face] & faces, face
    assert g["store"] == {"migrations"} and g["config"] == set() and g["migrations"] == set()


def test_the_checks_see_every_kind_of_upward_import_and_a_cycle(tmp_path):
    files = {
        "__init__": "from otatool.server.high import f\n",
        "high": "import otatool.server.low\n",
        "low": "def f():\n    from otatool.server import high\n",  # upward, in a function
        "mid": "from .high import g\nfrom . import low\n",  # upward and downward, relative
        "base": "from otatool import server\nimport importlib\n"
                "importlib.import_module('otatool.server.mid')\nimport aiohttp\n",
    }
    for name, source in files.items():
        (tmp_path / (name + ".py")).write_text(source)
    g = graph(str(tmp_path))
    assert g == {"__init__": {"high"}, "high": {"low"}, "low": {"high"}, "mid": {"high", "low"},
                 "base": {"__init__", "mid"}}
    layers = {"__init__": 3, "high": 2, "mid": 1, "low": 1, "base": 0}
    assert upward(g, layers) == ["base (0) imports __init__ (3)", "base (0) imports mid (1)",
                                 "low (1) imports high (2)", "mid (1) imports high (2)"]
    assert cycle(g) == ["high", "low", "high"]
