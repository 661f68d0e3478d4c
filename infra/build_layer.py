"""Builds the shared layer as `sam build` does (BuildMethod: python3.12), without Docker.

The layer's content is `layers/roleplay/` with its requirements installed into
`python/`, so everything lands on `/opt/python` in Lambda. By default it builds for
this interpreter (what the tests import); `--python-version 3.12` fetches the wheels the
Lambda runtime needs instead (manylinux, x86_64), for a deploy without `sam build`.

    python infra/build_layer.py [--out build/layer] [--python-version 3.12]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "roleplay"
REQUIREMENTS = LAYER / "requirements.txt"


def _deps_key(python_version: str | None) -> str:
    text = REQUIREMENTS.read_bytes() + (python_version or sys.version).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def install_dependencies(target: Path, python_version: str | None) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(target), "-r", str(REQUIREMENTS)]
    if python_version:
        command += ["--python-version", python_version, "--platform", "manylinux2014_x86_64",
                    "--implementation", "cp", "--only-binary=:all:"]
    subprocess.run(command, check=True)


def build(out: Path, python_version: str | None = None) -> Path:
    """Builds (or refreshes) the layer under `out`; answers its `python/` folder. Installed
    dependencies are kept beside it, keyed by the requirements, so a rebuild only copies."""
    deps = out.parent / f".{out.name}-deps-{_deps_key(python_version)}"
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        install_dependencies(deps, python_version)
        (deps / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(LAYER, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc",
                                                              "requirements.txt"))
    python = out / "python"
    shutil.copytree(deps, python, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".complete", "__pycache__"))
    return python


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "layer")
    parser.add_argument("--python-version", default=None)
    args = parser.parse_args()
    python = build(args.out, args.python_version)
    print(f"layer built: {python} ({size_mb(args.out):.1f} MB unzipped; Lambda allows 250)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
