"""The shape of container/NER, as docs/how-it-works.md describes it and the code must keep
it: the module map's imports are the code's, every module is on the map, functions and
modules stay small enough to read whole, and only settings.py reads the environment.

These read the source (ast), not a running server: what they protect is that a newcomer's
map stays true."""

import ast
import re

import pytest

from conftest import PROGRAM_DIR, ROOT

MAP = ROOT / "docs" / "how-it-works.md"
MODULES = sorted([*PROGRAM_DIR.glob("*.py"), PROGRAM_DIR / "serve"])
# The longest function and module a reader is expected to see whole.
MOST_FUNCTION_LINES = 60
MOST_MODULE_LINES = 400


def module_name(path):
    return path.name.removesuffix(".py")


def tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def project_imports(path):
    """The container modules this module imports, by name."""
    names = {module_name(p) for p in MODULES}
    found = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in names:
            found.add(node.module)
    return found


def module_map():
    """{module: (its concern, the imports the map names)} from the table between markers."""
    text = MAP.read_text()
    table = text[text.index("<!-- module-map:start -->") : text.index("<!-- module-map:end -->")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"\[`([^`]+)`\]\(.+\)", cells[0])
        if match and len(cells) == 3:
            imports = {i.strip() for i in cells[2].split(",") if i.strip()}
            rows[match[1]] = (cells[1], imports)
    return rows


def test_the_module_map_opens_the_page_and_lists_every_module():
    assert re.findall(r"^## (.+)$", MAP.read_text(), re.M)[0] == "The module map"
    listed = {name.removesuffix(".py") for name in module_map() if name != "nginx.conf"}
    assert listed == {module_name(p) for p in MODULES}
    assert "nginx.conf" in module_map()


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_the_module_map_names_what_each_module_imports(path):
    rows = {name.removesuffix(".py"): row for name, row in module_map().items()}
    concern, imports = rows[module_name(path)]
    assert concern
    assert imports == project_imports(path)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_functions_and_modules_are_short_enough_to_read_whole(path):
    lines = path.read_text().count("\n")
    assert lines <= MOST_MODULE_LINES, f"{path.name}: {lines} lines"
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MOST_FUNCTION_LINES, f"{path.name}: {node.name} is {length} lines"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_only_settings_reads_the_environment(path):
    """Every variable is read once, in settings.py; the others get plain values (passing
    the whole environment on to a child process is not reading it)."""
    if path.name == "settings.py":
        return
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func)
            assert target not in ("os.environ.get", "os.getenv"), f"{path.name}: {target}"
        if isinstance(node, ast.Subscript):
            assert ast.unparse(node.value) != "os.environ", f"{path.name}: os.environ[...]"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_function_keeps_state_in_a_closure(path):
    """No nested function definitions (a lambda that holds nothing is fine): state belongs
    in objects whose methods a reader can open one by one."""
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = [
                n.name
                for n in ast.walk(node)
                if n is not node and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            assert not inner, f"{path.name}: {node.name} defines {inner}"
