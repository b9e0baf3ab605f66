"""The `local` target: versions published atomically under a directory, served over HTTP.

`layout` says where things go and which names may go there, `publishing` writes a version
atomically on disk, `target` is the `Target` the workers call, and `http` serves what was
published.
"""

from __future__ import annotations

from appforge.services.deployer.targets.local.http import DeployHttpServer
from appforge.services.deployer.targets.local.target import LocalTarget

__all__ = ["DeployHttpServer", "LocalTarget"]
