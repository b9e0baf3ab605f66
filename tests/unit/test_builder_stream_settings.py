"""The settings of streamed text: APPFORGE_STREAM_FLUSH_MS, APPFORGE_STREAM_FLUSH_CHARS and
APPFORGE_SCRIPTED_STREAM_MS, their defaults, and the errors that name a bad value."""

from __future__ import annotations

import pytest

from appforge.services.builder.settings import BuilderSettings
from appforge.services.common.errors import ConfigError


def test_the_defaults() -> None:
    builder = BuilderSettings.from_env({})
    assert (builder.stream_flush_ms, builder.stream_flush_chars) == (50.0, 256)
    assert builder.scripted_stream_ms == 20.0
    assert BuilderSettings() == builder


def test_values_from_the_environment() -> None:
    builder = BuilderSettings.from_env(
        {
            "APPFORGE_STREAM_FLUSH_MS": "12.5",
            "APPFORGE_STREAM_FLUSH_CHARS": "64",
            "APPFORGE_SCRIPTED_STREAM_MS": "0",
        }
    )
    assert (builder.stream_flush_ms, builder.stream_flush_chars) == (12.5, 64)
    assert builder.scripted_stream_ms == 0.0  # 0: the scripted model streams at once


@pytest.mark.parametrize(
    ("name", "raw", "needle"),
    [
        ("APPFORGE_STREAM_FLUSH_MS", "0", "must be a positive, finite number of milliseconds"),
        ("APPFORGE_STREAM_FLUSH_MS", "-5", "must be a positive, finite number of milliseconds"),
        ("APPFORGE_STREAM_FLUSH_MS", "inf", "must be a positive, finite number of milliseconds"),
        ("APPFORGE_STREAM_FLUSH_MS", "50ms", "must be a number of milliseconds, got '50ms'"),
        ("APPFORGE_STREAM_FLUSH_CHARS", "0", "must be at least 1"),
        ("APPFORGE_STREAM_FLUSH_CHARS", "-1", "must be at least 1"),
        ("APPFORGE_STREAM_FLUSH_CHARS", "2.5", "must be a whole number"),
        ("APPFORGE_SCRIPTED_STREAM_MS", "-1", "must be a finite number of milliseconds, 0 or more"),
        (
            "APPFORGE_SCRIPTED_STREAM_MS",
            "nan",
            "must be a finite number of milliseconds, 0 or more",
        ),
        ("APPFORGE_SCRIPTED_STREAM_MS", "fast", "must be a number of milliseconds"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, raw: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} {needle}"):
        BuilderSettings.from_env({name: raw})


def test_the_admission_limit() -> None:
    assert BuilderSettings.from_env({}).max_running == 64
    assert BuilderSettings.from_env({"APPFORGE_BUILDER_MAX_RUNNING": "5"}).max_running == 5
    with pytest.raises(ConfigError, match="APPFORGE_BUILDER_MAX_RUNNING"):
        BuilderSettings.from_env({"APPFORGE_BUILDER_MAX_RUNNING": "0"})
