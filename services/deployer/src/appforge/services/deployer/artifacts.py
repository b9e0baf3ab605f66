"""What one deployment may carry: its files' paths, count and sizes. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.paths import safe_relative_path


@dataclass(frozen=True, kw_only=True)
class ArtifactLimits:
    """What one deployment may carry."""

    max_files: int = 1000
    max_file_bytes: int = 5 * 1024 * 1024
    max_total_bytes: int = 50 * 1024 * 1024
    max_path_length: int = 512


def normalise_path(path: str, field_name: str, limits: ArtifactLimits) -> str:
    """A safe relative path (posix, normalised, inside the version), or InvalidArgument."""
    return safe_relative_path(path, field_name, max_length=limits.max_path_length)


def validate_files(paths_and_sizes: Sequence[tuple[str, int]], limits: ArtifactLimits) -> list[str]:
    """Check an artifact's files; return their normalised paths."""
    if not paths_and_sizes:
        raise InvalidArgument("must contain at least one file", field="files")
    if len(paths_and_sizes) > limits.max_files:
        raise LimitExceeded(
            f"has {len(paths_and_sizes)} files; the limit is {limits.max_files}", field="files"
        )
    total = 0
    seen: set[str] = set()
    normalised = []
    for index, (path, size) in enumerate(paths_and_sizes):
        normal = normalise_path(path, f"files[{index}].path", limits)
        if normal in seen:
            raise InvalidArgument(f"{normal!r} appears twice", field=f"files[{index}].path")
        seen.add(normal)
        if size > limits.max_file_bytes:
            raise LimitExceeded(
                f"is {size} bytes; the limit is {limits.max_file_bytes}",
                field=f"files[{index}].content",
            )
        total += size
        normalised.append(normal)
    if total > limits.max_total_bytes:
        raise LimitExceeded(
            f"total {total} bytes; the limit is {limits.max_total_bytes}", field="files"
        )
    return normalised
