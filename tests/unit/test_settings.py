"""Settings read from an explicit environment mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from appforge.services.builder.settings import BuilderSettings
from appforge.services.common.errors import ConfigError
from appforge.services.common.settings import Limits, Settings
from appforge.services.deployer.settings import DeploySettings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(
        data_dir=Path(".appforge"),
        database_url="",
        redis_url="",
        chat_addr="127.0.0.1:50051",
        builder_addr="127.0.0.1:50052",
        deployer_addr="127.0.0.1:50053",
        host="127.0.0.1",
        log_level="INFO",
        log_format="logfmt",
        shutdown_grace=5.0,
        watch_poll_interval=5.0,
        limits=Limits(),
    )


def test_from_env_equals_the_dataclass_defaults() -> None:
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        pytest.param("APPFORGE_DATA_DIR", "/srv/af", "data_dir", Path("/srv/af"), id="data-dir"),
        pytest.param(
            "DATABASE_URL",
            "postgresql+asyncpg://u:p@db/appforge",
            "database_url",
            "postgresql+asyncpg://u:p@db/appforge",
            id="database-url",
        ),
        pytest.param(
            "REDIS_URL", "redis://cache:6379/0", "redis_url", "redis://cache:6379/0", id="redis"
        ),
        pytest.param("APPFORGE_CHAT_ADDR", "chat:1", "chat_addr", "chat:1", id="chat-addr"),
        pytest.param(
            "APPFORGE_BUILDER_ADDR", "builder:2", "builder_addr", "builder:2", id="builder-addr"
        ),
        pytest.param(
            "APPFORGE_DEPLOYER_ADDR", "dep:3", "deployer_addr", "dep:3", id="deployer-addr"
        ),
        pytest.param("APPFORGE_HOST", "0.0.0.0", "host", "0.0.0.0", id="host"),
        pytest.param("APPFORGE_LOG_LEVEL", "debug", "log_level", "DEBUG", id="log-level-upper"),
        pytest.param("APPFORGE_LOG_FORMAT", "json", "log_format", "json", id="log-format"),
        pytest.param("APPFORGE_SHUTDOWN_GRACE", "0.25", "shutdown_grace", 0.25, id="grace-decimal"),
        pytest.param("APPFORGE_SHUTDOWN_GRACE", "12", "shutdown_grace", 12.0, id="grace-int"),
        pytest.param(
            "APPFORGE_WATCH_POLL_INTERVAL",
            " 1.5 ",
            "watch_poll_interval",
            1.5,
            id="poll-interval-padded",
        ),
        pytest.param(
            "APPFORGE_SHUTDOWN_GRACE", "", "shutdown_grace", 5.0, id="empty-seconds-is-default"
        ),
        pytest.param(
            "APPFORGE_CHAT_ADDR", "", "chat_addr", "127.0.0.1:50051", id="empty-addr-is-default"
        ),
        pytest.param(
            "APPFORGE_DATA_DIR", "", "data_dir", Path(".appforge"), id="empty-dir-is-default"
        ),
    ],
)
def test_overrides(variable: str, value: str, attribute: str, expected: object) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, attribute) == expected
    untouched = {k: v for k, v in vars(Settings()).items() if k != attribute}
    assert {k: v for k, v in vars(settings).items() if k != attribute} == untouched


def test_from_env_reads_the_process_environment_when_given_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPFORGE_CHAT_ADDR", "chat.internal:6000")
    monkeypatch.setenv("APPFORGE_SHUTDOWN_GRACE", "2")
    settings = Settings.from_env()
    assert (settings.chat_addr, settings.shutdown_grace) == ("chat.internal:6000", 2.0)


def test_resolved_database_url_is_the_given_url() -> None:
    url = "postgresql+asyncpg://u:p@db/appforge"
    assert Settings.from_env({"DATABASE_URL": url}).resolved_database_url() == url


def test_resolved_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"APPFORGE_DATA_DIR": str(tmp_path / "data")})
    assert settings.resolved_database_url() == (
        f"sqlite+aiosqlite:///{tmp_path.resolve()}/data/appforge.db"
    )


def test_resolved_database_url_makes_a_relative_data_dir_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = Settings.from_env({}).resolved_database_url()
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/.appforge/appforge.db"
    # Four slashes in all: SQLAlchemy's spelling of an absolute path.
    assert url.startswith("sqlite+aiosqlite:////")


@pytest.mark.parametrize("variable", ["APPFORGE_SHUTDOWN_GRACE", "APPFORGE_WATCH_POLL_INTERVAL"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="word"),
        pytest.param("5s", id="unit-suffix"),
        pytest.param(" ", id="blank"),
        pytest.param("0", id="zero"),
        pytest.param("-0", id="negative-zero"),
        pytest.param("-1.5", id="negative"),
        pytest.param("1e-400", id="underflows-to-zero"),
    ],
)
def test_bad_seconds_are_a_config_error(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value)
    assert repr(value) in str(raised.value)


def test_nan_seconds_are_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"APPFORGE_WATCH_POLL_INTERVAL": "nan"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 20), ("", 20), ("1", 1), ("64", 64)],
    ids=["unset", "empty", "one", "many"],
)
def test_db_pool_size(raw: str | None, expected: int) -> None:
    env = {} if raw is None else {"APPFORGE_DB_POOL_SIZE": raw}
    assert Settings.from_env(env).db_pool_size == expected


@pytest.mark.parametrize("raw", ["0", "-3", "ten", "2.5"])
def test_db_pool_size_must_be_a_positive_whole_number(raw: str) -> None:
    with pytest.raises(ConfigError, match="APPFORGE_DB_POOL_SIZE"):
        Settings.from_env({"APPFORGE_DB_POOL_SIZE": raw})


def test_builder_settings_from_env() -> None:
    env = {
        "APPFORGE_MODEL": "openai",
        "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "APPFORGE_OPENAI_MODEL": "llama3",
        "APPFORGE_TOOL_TIMEOUT": "2.5",
        "APPFORGE_SWEEP_INTERVAL": "0.2",
        "APPFORGE_EXECUTION_LEASE": "3",
        "APPFORGE_MAX_TURNS": "7",
        "APPFORGE_METRICS_PORT": "0",
    }
    settings, builder = Settings.from_env(env), BuilderSettings.from_env(env)
    assert (builder.model, builder.openai_configured, builder.openai_model) == (
        "openai",
        True,
        "llama3",
    )
    assert (builder.tool_timeout, builder.sweep_interval, builder.execution_lease) == (2.5, 0.2, 3)
    assert builder.max_turns == 7 and settings.metrics_port == 0
    assert builder.sandboxes_under(settings.data_dir) == settings.data_dir / "sandboxes"
    assert BuilderSettings.from_env({"APPFORGE_SANDBOX_ROOT": "/srv/s"}).sandboxes_under(
        settings.data_dir
    ) == Path("/srv/s")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"APPFORGE_MODEL": "gpt"}, "APPFORGE_MODEL must be scripted or openai"),
        ({"APPFORGE_MODEL": "openai"}, "needs OPENAI_BASE_URL and APPFORGE_OPENAI_MODEL"),
        ({"APPFORGE_METRICS_PORT": "http"}, "APPFORGE_METRICS_PORT must be a port number"),
        ({"APPFORGE_METRICS_PORT": "70000"}, "APPFORGE_METRICS_PORT must be a port number"),
        ({"APPFORGE_TOOL_TIMEOUT": "0"}, "APPFORGE_TOOL_TIMEOUT must be a positive"),
    ],
)
def test_bad_builder_settings_are_explained(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)
        BuilderSettings.from_env(env)


def test_a_derived_public_url_follows_the_http_port() -> None:
    derived = DeploySettings.from_env({}).serving_on(9000)
    assert (derived.http_port, derived.public_url) == (9000, "http://127.0.0.1:9000")
    explicit = DeploySettings.from_env({"APPFORGE_DEPLOY_PUBLIC_URL": "https://apps.example.com"})
    assert explicit.serving_on(9000).public_url == "https://apps.example.com"


def test_the_deploy_root_defaults_under_the_data_dir() -> None:
    assert DeploySettings.from_env({}).root_under(Path("/d")) == Path("/d/deploys")
    explicit = DeploySettings.from_env({"APPFORGE_DEPLOY_ROOT": "/srv/apps"})
    assert explicit.root_under(Path("/d")) == Path("/srv/apps")
