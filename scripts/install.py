"""Install the project (editable, with its dev extras) into a virtual environment.

    python scripts/install.py VENV

Installs with uv when it can be had (it unpacks the ~3 GB of torch and its CUDA libraries
in parallel, several times faster than pip), else with pip. Either way everything is
byte-compiled now, once: otherwise every process the pipeline starts (each stage, each
Ray worker) compiles torch, Ray and DVC from source again wherever bytecode is not
written back (read-only installs, or PYTHONDONTWRITEBYTECODE, common in images).

uv does not read pip's configuration, so the package indexes, find-links and constraints
pip is configured with (files or PIP_* variables) are passed on to it: both installers see
the same packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pip option -> uv option; each takes one or more whitespace-separated values
FORWARDED = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
             "find-links": "--find-links", "constraint": "--constraint"}
# later sections override earlier ones, as in pip: environment variables win
SECTIONS = ("global", "install", ":env:")


def pip_settings(python: str) -> dict[str, list[str]]:
    """The forwarded options from `pip config list` (`section.key='value'` lines)."""
    listing = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                             text=True).stdout
    found: dict[str, dict[str, list[str]]] = {}
    for line in listing.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if key in FORWARDED and section in SECTIONS:
            found.setdefault(key, {})[section] = ast.literal_eval(value).split()
    return {key: by_section[max(by_section, key=SECTIONS.index)]
            for key, by_section in found.items()}


def uv_arguments(settings: dict[str, list[str]]) -> list[str]:
    """uv options for pip's settings; best match over all indexes, as pip resolves."""
    arguments = ["--index-strategy", "unsafe-best-match"]
    for key, values in settings.items():
        for value in values:
            arguments += [FORWARDED[key], value]
    return arguments


def main() -> None:
    venv = Path(sys.argv[1])
    python = str(venv / "bin" / "python")
    target = f"{ROOT}[dev]"
    quiet = ["--quiet", "--disable-pip-version-check"]
    have_uv = subprocess.run([python, "-m", "pip", "install", *quiet, "uv"],
                             capture_output=True).returncode == 0
    if have_uv:
        command = [str(venv / "bin" / "uv"), "pip", "install", "--quiet", "--python", python,
                   "--compile-bytecode", *uv_arguments(pip_settings(python)), "-e", target]
    else:
        command = [python, "-m", "pip", "install", *quiet, "-e", target]
    if subprocess.run(command).returncode != 0:
        sys.exit(f"could not install {target} into {venv}")
    # The project's own modules, which an editable install leaves uncompiled.
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "pipeline"),
                    str(ROOT / "stages")], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
