"""A pipeline's own Python code, made importable before spacy.load, so that the factories
and functions it registers (@Language.factory, @spacy.registry.misc) exist.

Where it comes from, as the SageMaker and Hugging Face inference toolkits lay it out:
`code/` beside the pipeline in model.tar.gz (in SM_MODEL_DIR, or in the pipeline's own
folder, which is where the image keeps a baked package's code). From it:

1. `code/requirements.txt`, if there is one, is installed with pip into a folder of its
   own, constrained to the versions of the image's packages (image_constraints), and that
   folder goes on sys.path after the image's packages: a requirement can add packages,
   never replace the spaCy, numpy or thinc the image pins. From `code/wheels/` alone (no index)
   when that folder exists: the way to serve from a VPC without internet.
2. `code/` goes on sys.path, and the modules SPACY_CODE_MODULES names (default: every
   top-level .py in code/) are imported.

Everything that goes wrong raises CodeError with a one-line reason: pipeline.py makes it
the start-up failure (or a multi-model load's 400 model_invalid).
"""

import glob
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from tuning import PIP_RETRIES, PIP_TIMEOUT_SECONDS

log = logging.getLogger("ner.code")
# What pip prints when it cannot reach a package index at all.
_UNREACHABLE = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
)
BAKE_HINT = (
    "ship the wheels in code/wheels/ (pip download -r code/requirements.txt -d code/wheels "
    "--only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11), "
    "or bake the packages into the image (docs/pipelines.md#custom-code)"
)


class CodeError(RuntimeError):
    """The pipeline's code/ cannot be used; the message says why in one line."""


def find_code_dir(pipeline_dir: str, model_dir: str) -> str | None:
    """code/ in the pipeline's folder, else in model_dir when the pipeline is in it."""
    candidates = [os.path.join(pipeline_dir, "code")]
    pipeline_real, model_real = os.path.realpath(pipeline_dir), os.path.realpath(model_dir)
    if os.path.dirname(pipeline_real) == model_real:
        candidates.append(os.path.join(model_dir, "code"))
    return next((c for c in candidates if os.path.isdir(c)), None)


# The inference toolkits' handler module (model_fn, input_fn...): it imports their own
# packages, and this server has its own handlers. Imported only when named.
TOOLKIT_HANDLER = "inference"


def top_level_names(code_dir: str) -> list[str]:
    """What code/ makes importable: its .py files and its packages, in name order."""
    return sorted(
        name.removesuffix(".py")
        for name in os.listdir(code_dir)
        if not name.startswith(".")
        and (name.endswith(".py") or os.path.isfile(os.path.join(code_dir, name, "__init__.py")))
    )


def modules_in(code_dir: str) -> list[str]:
    """The default modules: every top-level .py file, in name order, but the toolkits'
    handler."""
    return [
        n
        for n in top_level_names(code_dir)
        if os.path.isfile(os.path.join(code_dir, f"{n}.py")) and n != TOOLKIT_HANDLER
    ]


def packages_dir(code_dir: str, requirements: str) -> str:
    """Where code_dir's requirements are installed: one folder per code/ and contents of
    its requirements.txt and wheels/, so that a model loaded again (a multi-model endpoint's, a
    restarted server's) reuses its install, and /tmp does not fill up with copies."""
    key = hashlib.sha256(os.path.realpath(code_dir).encode())
    with open(requirements, "rb") as f:
        key.update(f.read())
    wheels = os.path.join(code_dir, "wheels")
    for name in sorted(os.listdir(wheels)) if os.path.isdir(wheels) else []:
        key.update(f"{name} {os.path.getsize(os.path.join(wheels, name))}".encode())
    return os.path.join(tempfile.gettempdir(), "ner-code-packages", key.hexdigest()[:16])


def install_requirements(code_dir: str) -> str | None:
    """pip install code/requirements.txt (once: packages_dir); the site-packages folder
    it went to, or None without a requirements file (or nothing to add). pip's output goes
    to the log, line by line."""
    requirements = os.path.join(code_dir, "requirements.txt")
    if not os.path.isfile(requirements):
        return None
    final = packages_dir(code_dir, requirements)
    if os.path.isdir(final):
        log.info("%s is installed in %s already", requirements, final)
        return _site_packages(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    # Installed beside it, then renamed: a server killed mid-install leaves no half
    # folder that the next start would take for a whole one.
    target = tempfile.mkdtemp(prefix="installing-", dir=os.path.dirname(final))
    _pip_install(requirements, target, code_dir)
    try:
        os.rename(target, final)
    except OSError:  # another process finished the same install first: use that one
        shutil.rmtree(target, ignore_errors=True)
    return _site_packages(final)


def _site_packages(prefix: str) -> str | None:
    """Where pip put the packages under prefix (None when the image had them all)."""
    found = glob.glob(os.path.join(prefix, "**", "*-packages"), recursive=True)
    return found[0] if found else None


def image_constraints(folder: str) -> str:
    """A pip constraints file of every distribution the image has, at its version: a
    requirement may add packages, never replace one of the image's (pip would otherwise
    install another numpy or spaCy, or try to remove the image's own)."""
    pins = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}
    )
    path = os.path.join(folder, "image-constraints.txt")
    with open(path, "w") as f:
        f.write("\n".join(pins) + "\n")
    return path


def _pip_install(requirements: str, target: str, code_dir: str) -> None:
    # --prefix, not --target: pip then counts the image's packages as installed, and
    # installs only what they lack (--target would install every dependency again).
    command = [sys.executable, "-m", "pip", "install", "--prefix", target, "-r", requirements]
    command += ["-c", image_constraints(target)]
    # --no-cache-dir: one install per code dir has nothing to reuse, and the image's user
    # has no home for pip's cache.
    command += ["--disable-pip-version-check", "--no-input", "--no-warn-script-location"]
    command += ["--no-cache-dir"]
    command += ["--retries", str(PIP_RETRIES), "--timeout", str(PIP_TIMEOUT_SECONDS)]
    wheels = os.path.join(code_dir, "wheels")
    if os.path.isdir(wheels):
        command += ["--no-index", "--find-links", wheels]
    log.info("installing %s: %s", requirements, " ".join(command[3:]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise CodeError(f"cannot run pip for {requirements}: {e}") from None
    output = (done.stdout + done.stderr).splitlines()
    for line in output:
        log.info("pip: %s", line)
    if done.returncode == 0:
        return
    shutil.rmtree(target, ignore_errors=True)
    if any(marker in line for line in output for marker in _UNREACHABLE):
        raise CodeError(
            f"cannot install {requirements}: no package index is reachable from the "
            f"container; {BAKE_HINT}"
        )
    if "No module named pip" in done.stderr:
        raise CodeError(f"cannot install {requirements}: this image has no pip; {BAKE_HINT}")
    last = next((line for line in reversed(output) if line.strip()), "no output")
    raise CodeError(f"cannot install {requirements}: pip failed: {last.strip()}")


def import_modules(code_dir: str, names: Sequence[str]) -> None:
    """Put code_dir on sys.path and import each module, refusing any name in code/ that
    is already taken: first on the path, it would hide that module from everything else
    (the server's own modules are top-level modules too)."""
    for name in top_level_names(code_dir) if code_dir not in sys.path else []:
        where = _origin(name)
        if where is not None and not _is_inside(where, code_dir):
            raise CodeError(
                f"code/{name} has the name of a module the server already uses ({where}); rename it"
            )
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # SyntaxError, ImportError, or whatever the module raises
            raise CodeError(
                f"cannot import {name!r} from {code_dir}: {type(e).__name__}: {e}"
            ) from None
        log.info("imported %s from %s", name, code_dir)


def _origin(name: str) -> str | None:
    """Where the module `name` comes from now ("built-in" for one compiled in), or None
    when nothing of that name can be imported."""
    taken = sys.modules.get(name)
    if taken is not None:
        return getattr(taken, "__file__", None) or "built-in"
    spec = importlib.util.find_spec(name)
    return None if spec is None else spec.origin or "built-in"


def _is_inside(path: str | None, folder: str) -> bool:
    return path is not None and os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def load_code(pipeline_dir: str, model_dir: str, names: Sequence[str] | None) -> str | None:
    """Install and import the pipeline's code/ (see the module's docstring); the folder,
    or None when the pipeline has none. names: SPACY_CODE_MODULES (None: every .py)."""
    code_dir = find_code_dir(pipeline_dir, model_dir)
    if code_dir is None:
        if names:
            raise CodeError(f"SPACY_CODE_MODULES names {list(names)} but there is no code/")
        return None
    packages = install_requirements(code_dir)
    if packages is not None:
        sys.path.append(packages)  # after the image's own packages: those win
    import_modules(code_dir, modules_in(code_dir) if names is None else names)
    return code_dir
