"""Check the pinned packages and the image's Debian packages for known vulnerabilities.

`make audit` runs it (docs/image.md#the-audit):

- Python: pip-audit on each hash-pinned requirements file (the image's, the notebook's, the
  dev tools'), asking PyPI's JSON API, which serves the Python Packaging Advisory Database
  and GitHub's advisories per release. Nothing is installed (--disable-pip).
- Debian: in the image, as root, apt against bookworm's update suites: a package whose
  security update is published but not in the image fails.

A vulnerability with a fixed version fails the run. One without a fix fails too unless
security/vulnerability-exceptions.toml names it, with a reason and a date. A pin the
service does not answer for is not audited, and fails the run unless --unanswered=warn:
a vulnerability check that could not ask must not look like one that found nothing.
"""

import argparse
import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED_FILES = [
    "container/pip-requirements.txt",
    "container/requirements.txt",
    "container/requirements-transformers.txt",
    "container/model-requirements.txt",
    "requirements-dev.txt",
    "requirements-notebook.txt",
]
EXCEPTIONS = ROOT / "security" / "vulnerability-exceptions.toml"
SECURITY_SUITE = "Debian-Security"
UNANSWERED_HINT = (
    "PyPI's JSON API did not answer for them (on a network that reaches only PyPI's simple "
    "index, as behind some mirrors and proxies); audit where the API answers"
)


@dataclass(frozen=True)
class Finding:
    source: str  # the requirements file's name, or the image
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]


@dataclass(frozen=True)
class Exception_:
    id: str
    package: str
    reason: str
    date: str


def load_exceptions(path: Path) -> list[Exception_]:
    if not path.is_file():
        return []
    entries = tomllib.loads(path.read_text()).get("exception", [])
    found = []
    for entry in entries:
        missing = {"id", "package", "reason", "date"} - set(entry)
        if missing:
            raise SystemExit(f"audit: {path}: an exception lacks {', '.join(sorted(missing))}")
        found.append(Exception_(entry["id"], entry["package"], entry["reason"], str(entry["date"])))
    return found


def pip_audit(requirements: Path) -> tuple[list[Finding], list[str]]:
    """pip-audit's findings for one file, and the pins it could not audit."""
    command = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements)]
    command += ["--disable-pip", "--no-deps", "--vulnerability-service", "pypi"]
    command += ["--format", "json", "--progress-spinner", "off"]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"audit: pip-audit failed on {requirements}: {done.stderr.strip()[-500:]}"
        ) from None
    findings, unanswered = [], []
    for dependency in report["dependencies"]:
        if "skip_reason" in dependency:
            unanswered.append(dependency["name"])
            continue
        for vuln in dependency.get("vulns", []):
            findings.append(
                Finding(
                    requirements.name,
                    dependency["name"],
                    dependency["version"],
                    vuln["id"],
                    tuple(vuln.get("aliases", [])),
                    tuple(vuln.get("fix_versions", [])),
                )
            )
    return findings, unanswered


def simulated_upgrades(out: str) -> list[Finding]:
    """The updates in `apt-get --simulate upgrade`'s output, a line each:
    Inst libexpat1 [2.5.0-1+deb12u2] (2.5.0-1+deb12u5 Debian-Security:12/stable-security [amd64])
    """
    findings = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "Inst" or not parts[2].startswith("["):
            continue
        old, new = parts[2].strip("[]"), parts[3].strip("(")
        suite = "security" if SECURITY_SUITE in line else "updates"
        findings.append(Finding("debian", parts[1], old, f"debian-{suite}-update", (), (new,)))
    return findings


def debian_updates(image: str) -> list[Finding]:
    """The image's packages with an update in bookworm's suites, from apt's simulation
    run in the image as root."""
    # dist-upgrade: an update that needs a new package counts too (upgrade holds it back).
    script = "apt-get update -qq >/dev/null && apt-get --simulate dist-upgrade"
    command = ["docker", "run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", image]
    done = subprocess.run([*command, "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"audit: apt in {image} failed: {done.stderr.strip()[-500:]}")
    return simulated_upgrades(done.stdout)


def judge(
    findings: list[Finding], exceptions: list[Exception_]
) -> tuple[list[str], list[str], list[Exception_]]:
    """The findings that fail the run and those an exception allows, as lines to print,
    and the exceptions no finding needed (to be removed)."""
    by_id = {(e.package.lower(), e.id): e for e in exceptions}
    failures, allowed, used = [], [], set()
    for f in findings:
        names = [f.id, *f.aliases]
        match = next(
            (by_id[(f.package.lower(), n)] for n in names if (f.package.lower(), n) in by_id), None
        )
        line = f"{f.source}: {f.package} {f.version}: {f.id}"
        if f.aliases:
            line += f" ({', '.join(f.aliases)})"
        if match:
            used.add(match)
        if f.fixed_in:
            line += f": fixed in {', '.join(f.fixed_in)}"
            failures.append(line + ("; an exception cannot keep a fixed one" if match else ""))
        elif match:
            allowed.append(f"{line}: no fix yet; allowed on {match.date}: {match.reason}")
        else:
            failures.append(
                f"{line}: no fix yet; name it in {EXCEPTIONS.relative_to(ROOT)} with a reason "
                "and a date to allow it, or drop the package"
            )
    return failures, allowed, [e for e in exceptions if e not in used]


def audit_python(files: list[Path]) -> tuple[list[Finding], list[str]]:
    findings, unanswered = [], []
    for path in files:
        found, skipped = pip_audit(path)
        findings += found
        unanswered += [f"{path.name}: {name}" for name in skipped]
        print(
            f"audit: {path.name}: {len(found)} known vulnerabilities, "
            f"{len(skipped)} pins not audited",
            flush=True,
        )
    return findings, unanswered


def audit_images(images: list[str]) -> list[Finding]:
    findings = []
    for image in images:
        updates = debian_updates(image)
        security = [u for u in updates if u.id == "debian-security-update"]
        for u in updates:
            if u not in security:
                print(
                    f"audit: {image}: {u.package} {u.version} -> {u.fixed_in[0]} (not a "
                    "security update; a rebuild takes it)"
                )
        print(f"audit: {image}: {len(security)} Debian security updates not in the image")
        findings += [
            Finding(f"{image} (Debian)", u.package, u.version, "security update", (), u.fixed_in)
            for u in security
        ]
    return findings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requirements",
        type=Path,
        action="append",
        help="a pinned requirements file (default: all of the project's)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="an image whose Debian packages to check (repeatable)",
    )
    parser.add_argument("--exceptions", type=Path, default=EXCEPTIONS)
    parser.add_argument("--report", type=Path, help="also write the outcome here, as JSON")
    parser.add_argument(
        "--unanswered",
        choices=["fail", "warn"],
        default="fail",
        help="what a pin the vulnerability service did not answer for does",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    files = args.requirements or [ROOT / f for f in PINNED_FILES]
    exceptions = load_exceptions(args.exceptions)
    findings, unanswered = audit_python(files)
    findings += audit_images(args.image)
    failures, allowed, unused = judge(findings, exceptions)
    for line in allowed:
        print(f"audit: allowed: {line}")
    not_audited = {entry.split(": ")[-1].lower() for entry in unanswered}
    for e in unused:
        if e.package.lower() not in not_audited:
            print(f"audit: {args.exceptions.name}: {e.package} {e.id} is not found now; remove it")
    if unanswered:
        print(
            f"audit: {len(unanswered)} pins not audited: {UNANSWERED_HINT}: "
            f"{', '.join(unanswered[:8])}{' ...' if len(unanswered) > 8 else ''}"
        )
    for line in failures:
        print(f"audit: FAIL: {line}")
    failed = bool(failures) or (bool(unanswered) and args.unanswered == "fail")
    if args.report:
        outcome = {"failed": failed, "failures": failures, "allowed": allowed}
        outcome["unanswered"] = unanswered
        args.report.write_text(json.dumps(outcome, indent=1) + "\n")
    print(
        f"audit: {'failed' if failed else 'passed'}: {len(failures)} failing, "
        f"{len(allowed)} allowed, {len(unanswered)} not audited"
        f"{' (allowed by --unanswered=warn)' if unanswered and not failed else ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
