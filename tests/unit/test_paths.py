"""The one path rule every edge applies: the services' request checks and both deploy targets."""

from __future__ import annotations

import pytest

from appforge.services.common.errors import InvalidArgument
from appforge.services.common.paths import component_problem, path_problem, safe_relative_path
from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.local.layout import validate_publication
from appforge.services.deployer.targets.s3 import plan_uploads

NEVER_INSIDE = [
    pytest.param("", id="empty"),
    pytest.param("/etc/passwd", id="absolute"),
    pytest.param("../secret", id="parent"),
    pytest.param("a/../../b", id="parent-inside"),
    pytest.param("a/../b", id="parent-that-normalises-away"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("x" * 256, id="component-too-long"),
]
LOOSE = [
    pytest.param("./index.html", "index.html", id="dot-prefix"),
    pytest.param("css//site.css", "css/site.css", id="double-slash"),
    pytest.param("js/app.js/", "js/app.js", id="trailing-slash"),
    pytest.param("a/./b", "a/b", id="dot-inside"),
]


@pytest.mark.parametrize("path", NEVER_INSIDE)
def test_what_can_never_name_a_file_inside_is_refused_at_every_edge(path: str) -> None:
    assert path_problem(path) is not None
    assert path_problem(path, normalised=False) is not None
    with pytest.raises(InvalidArgument) as raised:
        safe_relative_path(path, "files[0].path", max_length=4096)
    assert raised.value.field == "files[0].path"
    files = [ArtifactFile(path=path, content=b"x", content_type="text/plain")]
    with pytest.raises(PublishError):
        validate_publication("app", "v1", files)
    with pytest.raises(PublishError):
        plan_uploads("app", "v1", files)


@pytest.mark.parametrize(("path", "normal"), LOOSE)
def test_a_loose_path_is_normalised_at_the_service_and_refused_by_the_targets(
    path: str, normal: str
) -> None:
    assert safe_relative_path(path, "path", max_length=4096) == normal
    assert path_problem(normal) is None
    assert path_problem(path) == "is not normalised"
    files = [ArtifactFile(path=path, content=b"x", content_type="text/plain")]
    with pytest.raises(PublishError, match="not normalised"):
        validate_publication("app", "v1", files)
    with pytest.raises(PublishError, match="not normalised"):
        plan_uploads("app", "v1", files)


def test_the_root_itself_is_not_a_file() -> None:
    with pytest.raises(InvalidArgument, match="not the root"):
        safe_relative_path("./", "path", max_length=4096)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("app-1", None),
        ("a/b", "contains a path separator"),
        ("..", "is a dot segment"),
        (".", "is a dot segment"),
        ("", "is empty"),
        ("a\x7fb", "contains unprintable characters"),
    ],
)
def test_an_id_used_as_a_directory_is_one_safe_component(value: str, problem: str | None) -> None:
    assert component_problem(value) == problem
