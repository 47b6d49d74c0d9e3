"""A multi-model endpoint's model names: what SageMaker may name a model here, and where
its gunicorn socket is (a folder of that name; nginx.conf finds it from the request's
path)."""

import os
import re

from protocol import ApiError

# A model name becomes a folder name and part of nginx's location regex (nginx.conf is
# rendered with this very pattern): letters, digits, dot, dash and underscore, not
# starting with a dot, so no name is "." or ".." or holds a slash.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
# The longest path a Unix socket may have (sun_path is 108 bytes with the final NUL). A
# model's gunicorn socket is <run folder>/models/<name>/sock (nginx.conf names it from the
# request's path, so it cannot be shorter than the name), which leaves a name 71
# characters under the default TMPDIR (/tmp): room for a hexadecimal SHA-256, and
# SageMaker's names are opaque hashes. A longer name is refused with a 400 saying so.
SOCKET_PATH_MAX = 107
SOCKET_NAME = "sock"


def socket_path(models_dir: str, name: str) -> str:
    return os.path.join(models_dir, name, SOCKET_NAME)


def check_name(name: object, models_dir: str) -> None:
    """ApiError 400 unless name can be a model's name here."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ApiError(
            400, "invalid_model_name", f"model_name must match {NAME_PATTERN}, got {name!r}"
        )
    path = len(socket_path(models_dir, name).encode())
    if path > SOCKET_PATH_MAX:
        longest = SOCKET_PATH_MAX - (path - len(name))
        raise ApiError(
            400,
            "model_name_too_long",
            f"model_name is over {longest} characters, the most whose socket "
            f"path fits (TMPDIR={os.path.dirname(os.path.dirname(models_dir))})",
        )
