#!/usr/bin/env python3
"""The peer apps' own venvs, bench/peers/.venvs/<name>, outside the project's: each made with
`python -m venv` and pip from PyPI with its pinned requirements file, and made again only when
that file changed (its copy in the venv says what was installed). Safe to run again.

    .venv/bin/python bench/peers/venvs.py [NAME…]   # all, or those named (bench/run.py --peers)
"""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent
REQUIREMENTS = {"sqladmin": PEERS / "requirements-sqladmin.txt",
                "flask-security": PEERS / "requirements-flask-security.txt"}


def ensure(name: str) -> Path:
    """The bin directory of the venv for peer `name`, installed from its requirements file."""
    venv = PEERS / ".venvs" / name
    requirements = REQUIREMENTS[name]
    installed = venv / "requirements.txt"
    if installed.exists() and filecmp.cmp(installed, requirements, shallow=False):
        return venv / "bin"
    print(f"Installing {name}'s venv in {venv}…", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(requirements)], check=True)
    shutil.copyfile(requirements, installed)
    return venv / "bin"


if __name__ == "__main__":
    for peer in sys.argv[1:] or REQUIREMENTS:
        ensure(peer)
