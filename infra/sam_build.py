"""The one build of the Lambda artifacts: the real `sam build` (aws-sam-cli, `make sam-build`).

Tests and the cold-start bench use what it leaves in `.aws-sam/build`, under the runtime's
Python 3.12, as Lambda runs it: the function's folder (/var/task) and each layer's `python/`
(/opt/python) on the path, nothing else.

    python -m infra.sam_build    # builds, and prints each layer's size
"""

from __future__ import annotations

import subprocess
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".aws-sam" / "build"
LAYERS = ("RoleplayLayer", "SpeechLayer")
SPEAKING_FUNCTIONS = frozenset({"tts", "chat", "openai_api"})
"""Functions deployed with the speech layer (chat and openai_api only when TtsBaseUrl is empty)."""


class BuildError(RuntimeError):
    pass


def python312() -> str:
    """The path of a Python 3.12 (infra/find-python3.12), or a BuildError saying how to get one."""
    found = subprocess.run(["sh", str(ROOT / "infra" / "find-python3.12")],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise BuildError(found.stderr.strip())
    return found.stdout.strip()


def sam_build() -> Path:
    """Runs `sam build --cached` (through the Makefile, which installs aws-sam-cli in
    .venv-sam on first use); answers the build folder."""
    python312()
    done = subprocess.run(["make", "--no-print-directory", "sam-build"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                           if not line.startswith("WARNING: Location"))
        raise BuildError(f"`make sam-build` failed:\n{output[-4000:]}")
    return BUILD


LOGICAL_IDS = {"openai_api": "OpenAIFunction"}
"""Functions whose template name is not their folder's name capitalized."""


def function_dir(name: str, build: Path = BUILD) -> Path:
    """A function's built folder, /var/task in Lambda (`tts` -> TtsFunction)."""
    return build / LOGICAL_IDS.get(name, f"{name.capitalize()}Function")


def layer_paths(name: str, build: Path = BUILD) -> list[Path]:
    """The layers' `python/` folders a function has on /opt/python, in the template's order."""
    layers = ["RoleplayLayer"] + (["SpeechLayer"] if name in SPEAKING_FUNCTIONS else [])
    return [build / layer / "python" for layer in layers]


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1_000_000


def zipped_mb(folder: Path) -> float:
    """The size of the zip `sam deploy` uploads for this folder (deflated)."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "artifact.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for file in sorted(f for f in folder.rglob("*") if f.is_file()):
                zipped.write(file, file.relative_to(folder))
        return archive.stat().st_size / 1_000_000


def main() -> int:
    try:
        build = sam_build()
    except BuildError as error:
        print(error)
        return 1
    for layer in LAYERS:
        print(f"{layer}: {size_mb(build / layer):.1f} MB unzipped, "
              f"{zipped_mb(build / layer):.1f} MB zipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
