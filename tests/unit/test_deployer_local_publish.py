"""The `local` deploy target's publishes: a worker publishing through it, exact bytes, one
write per version however often or concurrently it is asked, the switch of `current`, URLs,
its answers about published versions, and content types."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from appforge.services.deployer.bootstrap import build_targets
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.domain import (
    AttemptOutcome,
    WorkerConfig,
)
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.targets.local import LocalTarget
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker
from tests.unit.deployer_fakes import OneDeployment, claim_for
from tests.unit.deployer_local_helpers import (
    APP_FILES,
    PUBLIC_URL,
    WAIT,
    art,
    staging_entries,
    version_dir,
)


async def _ignore(_deployment_id: str) -> None:
    return None


@pytest.mark.parametrize(
    ("named", "outcome", "url"),
    [
        ("local", AttemptOutcome.SUCCEEDED, "http://deploy.test:8080/apps/app-1/"),
        ("s3", AttemptOutcome.FAILED_PERMANENT, ""),  # no bucket configured: no s3 target
    ],
    ids=["local", "unconfigured-s3"],
)
async def test_a_worker_publishes_through_the_target_a_deployment_names(
    root: Path, tmp_path: Path, named: str, outcome: AttemptOutcome, url: str
) -> None:
    targets = build_targets(DeploySettings(root=root, public_url=PUBLIC_URL), tmp_path)
    store = OneDeployment()
    timer = ManualTimer()  # never moved: the deadline cannot interfere
    worker = DeploymentWorker(
        worker_id="w1",
        store=store,  # type: ignore[arg-type]
        targets=targets,
        clock=timer,
        config=WorkerConfig(),
        wake=asyncio.Event(),
        on_change=_ignore,
    )

    await asyncio.wait_for(worker.attempt(claim_for(named, timer.now_us(), APP_FILES)), WAIT)

    [(recorded, error, published_url)] = store.finished
    assert (recorded, published_url) == (outcome, url)
    if named == "local":
        assert error == ""
        for file in APP_FILES:
            assert (root / "apps" / "app-1" / "current" / file.path).read_bytes() == file.content
    else:
        assert error == "target 's3' is not configured"
        assert not root.exists()


async def test_files_land_with_their_exact_bytes(root: Path, target: LocalTarget) -> None:
    publication = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert publication.url == "http://deploy.test:8080/apps/app-1/"
    for file in APP_FILES:
        assert (version_dir(root, "app-1", "v1") / file.path).read_bytes() == file.content
        assert (root / "apps" / "app-1" / "current" / file.path).read_bytes() == file.content
    assert os.readlink(root / "apps" / "app-1" / "current") == "versions/v1"  # relative link
    assert target.published_versions("app-1") == ["v1"]
    assert target.current_version("app-1") == "v1"
    assert target.publish_count == 1
    assert staging_entries(root) == []


async def test_publishing_a_version_again_writes_nothing(root: Path, target: LocalTarget) -> None:
    first = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    index = version_dir(root, "app-1", "v1") / "index.html"
    before = (index.stat().st_mtime_ns, index.stat().st_ino)

    # Even with different bytes: a version is immutable once published.
    again = await target.publish(
        app_id="app-1", app_version_id="v1", files=[art("index.html", b"changed")]
    )

    assert again == first
    assert target.publish_count == 1
    assert (index.stat().st_mtime_ns, index.stat().st_ino) == before
    assert index.read_bytes() == APP_FILES[0].content
    assert staging_entries(root) == []


async def test_concurrent_publishes_of_one_version_write_it_once(
    root: Path, target: LocalTarget
) -> None:
    publications = await asyncio.wait_for(
        asyncio.gather(
            *(
                target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
                for _ in range(8)
            )
        ),
        WAIT,
    )

    assert {p.url for p in publications} == {"http://deploy.test:8080/apps/app-1/"}
    assert target.publish_count == 1
    assert target.published_versions("app-1") == ["v1"]
    assert staging_entries(root) == []


async def test_a_new_version_switches_current(root: Path, target: LocalTarget) -> None:
    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    await target.publish(
        app_id="app-1", app_version_id="v2", files=[art("index.html", b"version two")]
    )

    current = root / "apps" / "app-1" / "current"
    assert os.readlink(current) == "versions/v2"
    assert (current / "index.html").read_bytes() == b"version two"
    assert not (current / "assets").exists()
    assert target.published_versions("app-1") == ["v1", "v2"]
    assert target.publish_count == 2
    # No temporary link is left next to `current`.
    assert sorted(os.listdir(root / "apps" / "app-1")) == ["current", "versions"]


async def test_a_retry_after_a_crash_before_the_switch_only_switches(
    root: Path, target: LocalTarget
) -> None:
    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    (root / "apps" / "app-1" / "current").unlink()  # the crash: committed, never switched

    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert target.current_version("app-1") == "v1"
    assert target.publish_count == 1


async def test_apps_are_independent(root: Path, target: LocalTarget) -> None:
    one = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    two = await target.publish(app_id="app-2", app_version_id="v1", files=APP_FILES)

    assert (one.url, two.url) == (
        "http://deploy.test:8080/apps/app-1/",
        "http://deploy.test:8080/apps/app-2/",
    )
    assert target.publish_count == 2


async def test_the_url_quotes_the_app_id(target: LocalTarget) -> None:
    publication = await target.publish(app_id="my app?", app_version_id="v1", files=APP_FILES)
    assert publication.url == "http://deploy.test:8080/apps/my%20app%3F/"


def test_helpers_answer_for_unknown_or_bad_apps(target: LocalTarget) -> None:
    assert target.published_versions("nope") == []
    assert target.published_versions("../etc") == []
    assert target.current_version("nope") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("INDEX.HTM", "text/html; charset=utf-8"),
        ("assets/app.js", "text/javascript; charset=utf-8"),
        ("assets/mod.mjs", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.svg", "image/svg+xml"),
        ("data.json", "application/json"),
        ("img.png", "image/png"),
        ("font.woff2", "font/woff2"),
        ("prog.wasm", "application/wasm"),
        ("doc.pdf", "application/pdf"),
        ("blob", "application/octet-stream"),
        ("weird.zzz", "application/octet-stream"),
    ],
)
def test_content_type_from_the_extension(path: str, expected: str) -> None:
    assert content_type_for(path) == expected
