"""
Installing what C{make bench --peers} runs, and saying so on stdout:
Debian's nginx with apt-get (C{nginx-light}, which has the WebDAV module),
aiohttp, uvloop and Tornado with pip into the Python the benchmark runs
under (the project's C{.venv}).  A peer that cannot be had is skipped with
the reason, the others are measured.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

#: Debian's package: the smallest nginx with C{--with-http_dav_module}.
NGINX_PACKAGE = "nginx-light"

#: What each Python peer needs in the venv, by import name: pip name.
PIP_PACKAGES: dict[str, dict[str, str]] = {
    "aiohttp": {"aiohttp": "aiohttp", "uvloop": "uvloop"},
    "tornado": {"tornado": "tornado"},
}


@dataclass
class Installed:
    """The peers that can run, their software's versions, and why the others cannot."""

    peers: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def nginxBinary() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.path.exists("/usr/sbin/nginx"):
        found = "/usr/sbin/nginx"
    return found


def nginxVersion(binary: str) -> tuple[str, bool]:
    """C{nginx -V}: its version, and whether it was built with the WebDAV module."""
    result = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    text = result.stderr + result.stdout
    version = text.splitlines()[0].partition(":")[2].strip() if text else "nginx"
    return version, "--with-http_dav_module" in text


def _aptInstall(package: str, say: Callable[[str], None]) -> str:
    """apt-get install C{package}; why not, or ''."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine: install nginx with its WebDAV module by hand"
    if os.geteuid() != 0:
        return f"not root: install it first with `sudo apt-get install {package}`"
    say(f"peers: installing Debian's {package} with apt-get (not started as a service)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        say("peers: apt-get install failed; running apt-get update and trying again")
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"apt-get install {package} failed: {result.stderr.strip()[-300:]}"
    return ""


def ensureNginx(installed: Installed, say: Callable[[str], None]) -> None:
    binary = nginxBinary()
    if binary is None:
        why = _aptInstall(NGINX_PACKAGE, say)
        binary = nginxBinary()
        if binary is None:
            installed.skipped["nginx"] = why or "nginx not found after installing it"
            return
    else:
        say(f"peers: using the installed {binary}")
    version, dav = nginxVersion(binary)
    if not dav:
        installed.skipped["nginx"] = f"{binary} was built without the WebDAV module"
        return
    installed.peers.append("nginx")
    installed.versions["nginx"] = version


def _missing(modules: dict[str, str]) -> list[str]:
    return [pip for module, pip in modules.items() if importlib.util.find_spec(module) is None]


def ensurePython(peer: str, installed: Installed, say: Callable[[str], None]) -> None:
    modules = PIP_PACKAGES[peer]
    missing = _missing(modules)
    if missing:
        say(f"peers: installing {' '.join(missing)} into {sys.prefix} with pip")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *missing],
            capture_output=True, text=True, check=False,
        )
        importlib.invalidate_caches()
        if result.returncode != 0 or _missing(modules):
            installed.skipped[peer] = f"pip install {' '.join(missing)} failed: " + (
                result.stderr.strip()[-300:]
            )
            return
    installed.peers.append(peer)
    installed.versions[peer] = ", ".join(
        f"{pip} {metadata.version(pip)}" for pip in modules.values()
    )
    if not missing:
        say(f"peers: using {installed.versions[peer]} already installed in {sys.prefix}")


def install(peers: list[str], say: Callable[[str], None] = print) -> Installed:
    """Install what C{peers} need (names from L{peerservices.PEERS}); what can run."""
    installed = Installed()
    for peer in peers:
        if peer == "nginx":
            ensureNginx(installed, say)
        else:
            ensurePython(peer, installed, say)
    for peer, why in installed.skipped.items():
        say(f"peers: {peer} SKIPPED: {why}")
    return installed
