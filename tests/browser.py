"""Headless Chromium for report tests: installed from Debian on first use (we run as root in CI)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("chromium is missing and the tests are not root: apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True)
    return shutil.which("chromium")


def render(page: Path, screenshot: Path, profile: Path) -> str:
    """Open ``page`` headless: save a screenshot and return the page text (the DOM after load)."""
    binary = chromium()
    common = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000"]
    subprocess.run([*common, f"--screenshot={screenshot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120)
    return dom.stdout
