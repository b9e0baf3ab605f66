"""An execution's sandbox: the directory its tool calls write the app into.

Every path is checked before the file system is touched (relative, normalised, no `..`)
and resolved without following symbolic links, so a tool call can never read or write
outside the sandbox, whatever it asks. Limits on file count, file size and total size
make a runaway model fail its call with a clear error instead of filling the disk.
Writes are atomic (a temporary file renamed into place). Blocking: call from a thread.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appforge.services.builder.models.base import (
    DELETE_FILE,
    LIST_FILES,
    READ_FILE,
    TOOL_NAMES,
    WRITE_FILE,
)
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.paths import safe_relative_path


class ToolError(Exception):
    """A tool call that cannot be done; its message becomes the call's error."""


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """What one execution may write."""

    max_files: int = 200
    max_file_bytes: int = 1024 * 1024
    max_total_bytes: int = 10 * 1024 * 1024
    max_path_length: int = 256


class Sandbox:
    """The files of one execution, under `root` (created on first write)."""

    def __init__(self, root: Path, limits: SandboxLimits | None = None) -> None:
        self.root = root
        self.limits = limits or SandboxLimits()

    # --- the tools -------------------------------------------------------------------------

    def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run one tool call; its result as JSON-able data, or ToolError."""
        if name == WRITE_FILE:
            return self.write_file(_text(arguments, "path"), _text(arguments, "content"))
        if name == READ_FILE:
            return self.read_file(_text(arguments, "path"))
        if name == DELETE_FILE:
            return self.delete_file(_text(arguments, "path"))
        if name == LIST_FILES:
            return self.list_files()
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(sorted(TOOL_NAMES))}")

    def write_file(self, path: str, content: str) -> dict[str, Any]:
        relative = self._relative(path)
        data = content.encode()
        if len(data) > self.limits.max_file_bytes:
            raise ToolError(
                f"{relative}: {len(data)} bytes is over the {self.limits.max_file_bytes}-byte limit"
            )
        files = self._files()
        previous = files.get(relative)
        if previous is None and len(files) >= self.limits.max_files:
            raise ToolError(f"{relative}: the sandbox already holds {self.limits.max_files} files")
        total = sum(files.values()) - (previous or 0) + len(data)
        if total > self.limits.max_total_bytes:
            raise ToolError(
                f"{relative}: the sandbox would hold {total} bytes, over the "
                f"{self.limits.max_total_bytes}-byte limit"
            )
        target = self._inside(relative, create_parents=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return {"path": relative, "bytes": len(data), "created": previous is None}

    def read_file(self, path: str) -> dict[str, Any]:
        relative = self._relative(path)
        target = self._inside(relative)
        if not _is_regular(target):
            raise ToolError(f"{relative}: no such file")
        try:
            content = target.read_bytes().decode()
        except UnicodeDecodeError:
            raise ToolError(f"{relative}: not a UTF-8 text file") from None
        return {"path": relative, "content": content}

    def delete_file(self, path: str) -> dict[str, Any]:
        relative = self._relative(path)
        target = self._inside(relative)
        if not _is_regular(target):
            raise ToolError(f"{relative}: no such file")
        target.unlink()
        return {"path": relative, "deleted": True}

    def list_files(self) -> dict[str, Any]:
        files = self._files()
        return {"files": [{"path": p, "bytes": files[p]} for p in sorted(files)]}

    def snapshot(self) -> list[tuple[str, bytes]]:
        """Every file with its bytes, in path order: what becomes the app version."""
        return [(p, self._inside(p).read_bytes()) for p in sorted(self._files())]

    # --- path safety -----------------------------------------------------------------------

    def _relative(self, path: str) -> str:
        try:
            return safe_relative_path(path, "path", max_length=self.limits.max_path_length)
        except InvalidArgument as exc:
            raise ToolError(f"path {path[:80]!r} {exc.message}") from None

    def _inside(self, relative: str, *, create_parents: bool = False) -> Path:
        """The real path of `relative` under the root, refusing any symbolic link on the way."""
        if create_parents:
            self.root.mkdir(parents=True, exist_ok=True)
        current = self.root
        parts = relative.split("/")
        for index, part in enumerate(parts):
            current = current / part
            last = index == len(parts) - 1
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if not last and create_parents:
                    current.mkdir()
                    continue
                if not last:
                    return current  # a missing directory: the caller reports "no such file"
                break
            if stat.S_ISLNK(mode):
                raise ToolError(f"{relative}: symbolic links are not followed")
            if not last and not stat.S_ISDIR(mode):
                raise ToolError(f"{relative}: {'/'.join(parts[: index + 1])} is a file")
            if last and stat.S_ISDIR(mode):
                raise ToolError(f"{relative}: is a directory")
        return current

    def _files(self) -> dict[str, int]:
        """Every regular file under the root with its size (links and temporaries skipped)."""
        found: dict[str, int] = {}
        if not self.root.is_dir():
            return found
        for directory, subdirectories, names in os.walk(self.root, followlinks=False):
            subdirectories[:] = [d for d in subdirectories if not Path(directory, d).is_symlink()]
            for name in names:
                path = Path(directory, name)
                if name.startswith(".tmp-") or path.is_symlink():
                    continue
                found[path.relative_to(self.root).as_posix()] = path.stat().st_size
        return found


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _text(arguments: Mapping[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str):
        raise ToolError(f"argument {key!r} must be a string")
    return value
