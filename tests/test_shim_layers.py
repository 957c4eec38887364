"""The shim's modules (tools/shim/*.py) import each other one way only: a
module imports modules of its own layer or of lower ones, and never in a
circle. Imports are read from the source (ast), top-level and function-level
alike, `__import__("name")` included; what is not a shim module (os, vfs,
micropython, ...) does not count."""
import ast
import os

from conftest import SHIM

# module -> layer; an import may go to the same layer or a lower one
LAYERS = {
    # 0: what every layer stands on, with no board state: settings, ESP-IDF's
    # error convention, the formats (partition table, otadata, app image)
    # and a fresh board's flash image
    "_env": 0, "_table": 0, "_otadata": 0, "_image": 0, "_factory": 0,
    # and the filesystem changes of device modules, counted or cut (_fsops)
    "_fsops": 0,
    # 1: the flash file: NOR rules, operations, faults, log
    "_flash": 1,
    # 2: ESP-IDF's partition access over the flash
    "_part": 2,
    # 3: the chip: power-on, resets and the helper call on the app's side
    # (_chip); the ESP-IDF code the helper process runs (_idf and below)
    "_chip": 3, "_idf": 3, "_bootloader": 3, "_otaops": 3,
    # 4: the firmware's modules as the app sees them, and their loader
    "_esp32": 4, "_machine": 4, "_mpy": 4, "esp32": 4, "machine": 4, "esp": 4,
    # 5: the firmware's start-up (boot.py, main.py)
    "_boot": 5,
}


def shim_modules(shim=SHIM):
    return sorted(n[:-3] for n in os.listdir(shim) if n.endswith(".py"))


def imports(path, known):
    """The shim modules in `known` that the source at `path` imports."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found & set(known)


def graph(shim=SHIM):
    names = shim_modules(shim)
    return {m: imports(os.path.join(shim, m + ".py"), names) for m in names}


def cycle(g):
    """One import cycle in graph `g` as a list of modules, or None."""
    state = {}  # module -> 1 while on the path, 2 when done

    def visit(m, path):
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n, path + [n])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_every_shim_module_has_a_layer():
    assert shim_modules() == sorted(LAYERS)


def test_imports_go_to_the_same_layer_or_a_lower_one():
    upward = sorted("%s (%d) imports %s (%d)" % (m, LAYERS[m], n, LAYERS[n])
                    for m, deps in graph().items() if m in LAYERS
                    for n in deps if n in LAYERS and LAYERS[n] > LAYERS[m])
    assert upward == []


def test_no_import_cycle():
    # within a layer too: the layers alone would allow one there
    assert cycle(graph()) is None


def test_the_flash_and_the_loader_stand_apart():
    g = graph()
    # the bottom: the flash tells the chip things through a hook (halt)
    assert g["_flash"] <= {"_env"}
    # the loader of the precompiled modules knows the faces, not the chip
    assert g["_mpy"] <= {"_env", "_machine", "_esp32"}


def test_the_checks_see_a_cycle_and_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import x\n")
    (tmp_path / "c.py").write_text("import os\n__import__('a')\n")
    g = graph(str(tmp_path))
    assert g == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert cycle(g) == ["a", "b", "c", "a"]
