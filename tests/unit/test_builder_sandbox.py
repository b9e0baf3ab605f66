"""The builder's sandbox: tool calls never touch anything outside it, and limits hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appforge.services.builder.sandbox import Sandbox, SandboxLimits, ToolError


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the sandbox with a file that no tool call may reach."""
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("do not touch")
    return secret


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(
        tmp_path / "sandbox", SandboxLimits(max_files=3, max_file_bytes=64, max_total_bytes=100)
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_write_read_list_delete(sandbox: Sandbox) -> None:
    assert sandbox.run("write_file", {"path": "index.html", "content": "<p>hi</p>"}) == {
        "path": "index.html",
        "bytes": 9,
        "created": True,
    }
    assert sandbox.run("write_file", {"path": "js/./app.js", "content": "1"})["path"] == "js/app.js"
    assert (
        sandbox.run("write_file", {"path": "index.html", "content": "<p>hello</p>"})["created"]
        is False
    )
    assert sandbox.run("read_file", {"path": "index.html"}) == {
        "path": "index.html",
        "content": "<p>hello</p>",
    }
    assert sandbox.run("list_files", {}) == {
        "files": [{"path": "index.html", "bytes": 12}, {"path": "js/app.js", "bytes": 1}]
    }
    assert sandbox.run("delete_file", {"path": "js/app.js"}) == {
        "path": "js/app.js",
        "deleted": True,
    }
    assert sandbox.snapshot() == [("index.html", b"<p>hello</p>")]


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "/etc/passwd",
        "a/../../outside/x",
        "a\\..\\x",
        "",
        ".",
        "x" * 300,
        "a\x00b",
        "..",
        "a/..",
    ],
    ids=[
        "parent",
        "absolute",
        "escape",
        "backslash",
        "empty",
        "dot",
        "long",
        "nul",
        "dotdot",
        "trailing",
    ],
)
@pytest.mark.parametrize("tool", ["write_file", "read_file", "delete_file"])
def test_unsafe_paths_fail_the_call_and_touch_nothing(
    sandbox: Sandbox, outside: Path, tmp_path: Path, tool: str, path: str
) -> None:
    before = _tree(tmp_path)
    with pytest.raises(ToolError, match="path"):
        sandbox.run(tool, {"path": path, "content": "pwned"})
    assert _tree(tmp_path) == before


def test_symbolic_links_are_never_followed(sandbox: Sandbox, outside: Path, tmp_path: Path) -> None:
    sandbox.run("write_file", {"path": "ok.txt", "content": "x"})
    os.symlink(outside, sandbox.root / "link")
    os.symlink(outside / "secret.txt", sandbox.root / "file-link")
    before = _tree(outside)
    for tool, path in [
        ("write_file", "link/secret.txt"),
        ("write_file", "link/new.txt"),
        ("read_file", "link/secret.txt"),
        ("delete_file", "link/secret.txt"),
        ("write_file", "file-link"),
        ("read_file", "file-link"),
        ("delete_file", "file-link"),
    ]:
        with pytest.raises(ToolError, match="symbolic links"):
            sandbox.run(tool, {"path": path, "content": "pwned"})
    assert _tree(outside) == before
    assert sandbox.run("list_files", {}) == {"files": [{"path": "ok.txt", "bytes": 1}]}


def test_limits_fail_the_call_with_a_clear_error(sandbox: Sandbox) -> None:
    with pytest.raises(ToolError, match="over the 64-byte limit"):
        sandbox.run("write_file", {"path": "big.txt", "content": "x" * 65})
    for n in range(3):
        sandbox.run("write_file", {"path": f"f{n}.txt", "content": "x" * 30})
    with pytest.raises(ToolError, match="already holds 3 files"):
        sandbox.run("write_file", {"path": "f3.txt", "content": "x"})
    with pytest.raises(ToolError, match="over the 100-byte limit"):
        sandbox.run("write_file", {"path": "f0.txt", "content": "x" * 50})
    sandbox.run("write_file", {"path": "f0.txt", "content": "x" * 40})  # 40+30+30 fits
    assert [p for p, _ in sandbox.snapshot()] == ["f0.txt", "f1.txt", "f2.txt"]


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("shell", {}, "unknown tool 'shell'"),
        ("write_file", {"path": "a"}, "argument 'content' must be a string"),
        ("write_file", {"path": 3, "content": "x"}, "argument 'path' must be a string"),
        ("read_file", {"path": "missing.txt"}, "missing.txt: no such file"),
        ("read_file", {"path": "dir/missing.txt"}, "no such file"),
        ("delete_file", {"path": "missing.txt"}, "no such file"),
    ],
)
def test_bad_calls_are_explained(
    sandbox: Sandbox, tool: str, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        sandbox.run(tool, arguments)


def test_files_and_directories_do_not_collide(sandbox: Sandbox) -> None:
    sandbox.run("write_file", {"path": "a", "content": "file"})
    with pytest.raises(ToolError, match="a is a file"):
        sandbox.run("write_file", {"path": "a/b", "content": "x"})
    sandbox.run("write_file", {"path": "d/x", "content": "x"})
    with pytest.raises(ToolError, match="is a directory"):
        sandbox.run("write_file", {"path": "d", "content": "x"})


def test_binary_files_are_not_read_as_text(sandbox: Sandbox) -> None:
    sandbox.root.mkdir(parents=True)
    (sandbox.root / "logo.png").write_bytes(b"\x89PNG\xff\xfe")
    with pytest.raises(ToolError, match="not a UTF-8 text file"):
        sandbox.run("read_file", {"path": "logo.png"})
