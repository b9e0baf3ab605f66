"""What the `local` deploy target modules share: a target under a temporary root, an app's
files, and where a published version and the staging area live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.local import LocalTarget, layout

PUBLIC_URL = "http://deploy.test:8080/"
WAIT = 5.0  # bound on every wait; the events come in milliseconds


def art(path: str, content: bytes = b"x", content_type: str = "text/plain") -> ArtifactFile:
    return ArtifactFile(path=path, content=content, content_type=content_type)


APP_FILES = (
    art("index.html", b"<!doctype html><title>calc</title>\n", "text/html"),
    art("assets/app.js", b"console.log('\xc3\xa9');\n", "text/javascript"),
    art("assets/img/logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    art("empty.txt", b""),
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "deploy"


@pytest.fixture
def target(root: Path) -> LocalTarget:
    return LocalTarget(root, PUBLIC_URL)


def version_dir(root: Path, app_id: str, version_id: str) -> Path:
    return root / "apps" / app_id / "versions" / version_id


def staging_entries(root: Path) -> list[str]:
    staging = root / layout.STAGING_DIR
    return sorted(os.listdir(staging)) if staging.exists() else []
