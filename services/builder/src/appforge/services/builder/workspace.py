"""Where an execution's tool calls run: the port, and its sandbox-directory adapter."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from typing import Any, Protocol

from appforge.services.builder.sandbox import Sandbox


class Workspace(Protocol):
    """Where an execution's tool calls run, and what it built."""

    async def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One tool call's output; ToolError for a call that cannot be done."""
        ...

    async def snapshot(self) -> list[tuple[str, bytes]]:
        """Every file, in path order."""
        ...

    async def discard(self) -> None:
        """Remove the files once the execution has ended (the version keeps them)."""
        ...


class SandboxWorkspace:
    """A `Sandbox` directory, its blocking file work done in threads."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def run(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sandbox.run, name, arguments)

    async def snapshot(self) -> list[tuple[str, bytes]]:
        return await asyncio.to_thread(self.sandbox.snapshot)

    async def discard(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.sandbox.root, True)
