"""Write the image's bill of materials as CycloneDX 1.5 JSON on stdout.

The Dockerfile runs it last in the image build (`python sbom.py > /opt/sbom/bom.cdx.json`)
with the image's own Python, so it needs nothing beyond the standard library and sees
what the image holds: every Debian package dpkg has installed, every Python distribution
in the virtual environment it runs in, the interpreter where Debian did not install it,
and the baked spaCy pipeline. Each package has a package URL (purl), which is what
vulnerability scanners match on. `make sbom` copies the file out of an image.
"""

import argparse
import json
import os
import platform
import re
import sys
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

DPKG_STATUS = Path("/var/lib/dpkg/status")
OS_RELEASE = Path("/etc/os-release")
BAKED_MODEL = Path(os.environ.get("SPACY_DEFAULT_MODEL", "/opt/ml-default-model"))
IMAGE_NAME = "spacy-ner-sagemaker"
# A license field longer than this is the license's whole text, not its name.
LICENSE_NAME_MAX = 120


def _purl_version(version: str) -> str:
    return quote(version, safe=".-_~")


def os_release() -> dict[str, str]:
    fields = {}
    for line in OS_RELEASE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields


def dpkg_packages(status: Path, distro: str, debian_id: str) -> list[dict]:
    """The installed packages of a dpkg status file, as CycloneDX components."""
    components = []
    for paragraph in status.read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", paragraph, flags=re.MULTILINE))
        if "installed" not in fields.get("Status", "").split():
            continue
        name, version, arch = fields["Package"], fields["Version"], fields["Architecture"]
        purl = f"pkg:deb/{debian_id}/{name}@{_purl_version(version)}?arch={arch}&distro={distro}"
        component: dict[str, Any] = {"type": "library", "bom-ref": purl, "name": name}
        component |= {"version": version, "purl": purl}
        source = fields.get("Source", "").split(" ")[0]
        if source and source != name:
            component["properties"] = [{"name": "debian:source", "value": source}]
        components.append(component)
    return components


def _license(dist: metadata.Distribution) -> list[dict]:
    # An email.message.Message underneath: .get() and .get_all() answer None when absent.
    fields: Any = dist.metadata
    expression = fields.get("License-Expression")
    if expression:
        return [{"license": {"name": expression}}]
    text = (fields.get("License") or "").strip()
    if text and len(text) <= LICENSE_NAME_MAX and "\n" not in text:
        return [{"license": {"name": text}}]
    classifiers = [
        c.split(" :: ")[-1]
        for c in fields.get_all("Classifier") or []
        if c.startswith("License :: ")
    ]
    return [{"license": {"name": c}} for c in classifiers]


def python_packages() -> list[dict]:
    """The distributions of the environment this runs in: the image's venv."""
    components = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        purl = f"pkg:pypi/{name}@{_purl_version(dist.version)}"
        component: dict[str, Any] = {"type": "library", "bom-ref": purl, "name": name}
        component |= {"version": dist.version, "purl": purl}
        licenses = _license(dist)
        if licenses:
            component["licenses"] = licenses
        components[purl] = component
    return [components[k] for k in sorted(components)]


def interpreter() -> list[dict]:
    """CPython itself, where it is not one of Debian's packages (the official Python
    images build it into /usr/local)."""
    if sys.base_prefix == "/usr":
        return []
    version = platform.python_version()
    purl = f"pkg:generic/cpython@{version}"
    component: dict[str, Any] = {"type": "application", "bom-ref": purl, "name": "cpython"}
    component |= {"version": version, "purl": purl}
    component["properties"] = [{"name": "path", "value": sys.base_prefix}]
    return [component]


def baked_model(folder: Path) -> list[dict]:
    """The baked spaCy pipeline, from its meta.json."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return []
    meta = json.loads(meta_file.read_text())
    name = f"{meta.get('lang', 'xx')}_{meta.get('name', 'pipeline')}"
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": f"model:{name}@{meta.get('version', '0')}",
        "name": name,
        "version": str(meta.get("version", "0")),
        "properties": [
            {"name": "path", "value": str(folder)},
            {"name": "spacy:spacy_version", "value": str(meta.get("spacy_version", ""))},
            {"name": "spacy:pipeline", "value": ",".join(meta.get("pipeline", []))},
        ],
    }
    if meta.get("license"):
        component["licenses"] = [{"license": {"name": str(meta["license"])}}]
    return [component]


def bom(variant: str) -> dict:
    release = os_release()
    debian_id = release.get("ID", "debian")
    distro = f"{debian_id}-{release.get('VERSION_ID', '')}"
    system = {
        "type": "operating-system",
        "bom-ref": f"os:{distro}",
        "name": debian_id,
        "version": release.get("VERSION_ID", ""),
        "description": release.get("PRETTY_NAME", ""),
    }
    components = [system, *interpreter(), *python_packages(), *baked_model(BAKED_MODEL)]
    if DPKG_STATUS.is_file():
        components += dpkg_packages(DPKG_STATUS, distro, debian_id)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "tools": {"components": [{"type": "application", "name": "container/sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": f"image:{IMAGE_NAME}-{variant}",
                "name": IMAGE_NAME,
                "version": variant,
                "properties": [{"name": "architecture", "value": platform.machine()}],
            },
        },
        "components": components,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="cpu", help="the image variant (cpu, transformers)")
    args = parser.parse_args()
    json.dump(bom(args.variant), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
