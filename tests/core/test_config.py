from __future__ import annotations

from pathlib import Path

import pytest

from worker.core.config import ConfigError, load_settings, parse_settings

GOOD = {
    "accounts": {
        "intis-main": {
            "kind": "intis",
            "base_url": "https://go.intistele.com/",
            "login": "me",
            "api_key": {"env": "INTIS_KEY"},
            "batch_size": 50,
        },
        "smsc-main": {
            "kind": "smsc",
            "base_url": "https://smsc.ru",
            "login": "me",
            "password": {"env": "SMSC_PSW"},
        },
    },
    "routes": {"default": ["intis-main", "smsc-main"]},
}
ENV = {"INTIS_KEY": "k3y", "SMSC_PSW": "pa55"}


def test_good_config_resolves_secrets_routes_and_names() -> None:
    s = parse_settings(GOOD, ENV)
    assert s.accounts["intis-main"].api_key == "k3y"
    assert s.accounts["intis-main"].base_url == "https://go.intistele.com"
    assert s.accounts["smsc-main"].password == "pa55"
    assert s.resolve("default") == ("intis-main", "smsc-main")
    assert s.resolve("smsc") == ("smsc-main",)
    assert s.resolve("intis-main") == ("intis-main",)
    assert s.provider_names() == {"default", "intis-main", "smsc-main", "intis", "smsc"}
    with pytest.raises(KeyError):
        s.resolve("nowhere")


def test_redis_url_from_environment_wins() -> None:
    s = parse_settings(
        {**GOOD, "redis": {"url": "redis://a:1/0"}}, {**ENV, "REDIS_URL": "redis://b:2/0"}
    )
    assert s.redis_url == "redis://b:2/0"


def test_environment_overrides_name_the_key() -> None:
    env = {
        **ENV,
        "SMSQ__ACCOUNTS__INTIS_MAIN__BATCH_SIZE": "20",
        "SMSQ__ACCOUNTS__INTIS_MAIN__BASE_URL": "http://x",
    }
    s = parse_settings(GOOD, env)
    assert s.accounts["intis-main"].batch_size == 20
    assert s.accounts["intis-main"].base_url == "http://x"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    data = {
        "accounts": {
            "a": {"kind": "intis", "base_url": "http://h", "api_key": {"file": str(secret)}}
        }
    }
    assert parse_settings(data, {}).accounts["a"].api_key == "from-file"


def test_every_problem_is_listed_with_its_key() -> None:
    data = {
        "accounts": {
            "a": {
                "kind": "carrier-pigeon",
                "base_url": "ftp://x",
                "api_key": "inline-secret",
                "batch_size": -1,
            },
            "b": {
                "kind": "smsc",
                "base_url": "http://h",
                "password": {"env": "MISSING"},
                "colour": "red",
            },
        },
        "routes": {"r": ["a", "ghost"], "empty": []},
        "bogus": {},
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(data, {})
    problems = "\n".join(info.value.problems)
    for expected in (
        "accounts.a.kind: must be one of intellisoftware, intis, smsc",
        "accounts.a.base_url: must be an http(s) URL",
        "accounts.a.api_key: credentials are not written inline",
        "accounts.a.batch_size",
        "accounts.b.password: environment variable MISSING is not set",
        "accounts.b.colour: unknown setting",
        "routes.r: names account 'ghost'",
        "routes.empty: must be a non-empty list",
        "bogus: unknown section",
    ):
        assert expected in problems, expected
    assert "inline-secret" not in str(info.value)


def test_no_accounts_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="at least one provider account"):
        parse_settings({}, {})
    with pytest.raises(ConfigError, match="SMSQ_CONFIG: not set"):
        load_settings(None, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings("/nonexistent/smsq.toml", {})


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[accounts\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, {})


def test_web_and_scheduler_sections() -> None:
    data = {
        **GOOD,
        "web": {"port": 9000, "intake_tokens": [{"env": "TOKEN"}]},
        "scheduler": {"lease_seconds": 3, "horizon": 600},
    }
    s = parse_settings(data, {**ENV, "TOKEN": "t0k3n", "SMSQ__SCHEDULER__TICK_SECONDS": "0.5"})
    assert s.web.port == 9000 and s.web.intake_tokens == ("t0k3n",)
    assert s.scheduler.lease_seconds == 3.0 and s.scheduler.horizon == 600.0
    assert s.scheduler.tick_seconds == 0.5
    with pytest.raises(ConfigError) as info:
        parse_settings(
            {
                **GOOD,
                "web": {"port": "x", "intake_tokens": ["inline"]},
                "scheduler": {"lease": 1, "horizon": -1},
            },
            ENV,
        )
    problems = "\n".join(info.value.problems)
    for expected in (
        "web.port",
        "web.intake_tokens[0]: credentials are not written inline",
        "scheduler.lease: unknown",
        "scheduler.horizon: must be a positive",
    ):
        assert expected in problems, expected


def test_secrets_never_show_in_reprs_or_errors() -> None:
    s = parse_settings(
        {
            **GOOD,
            "redis": {"url": "redis://:hunter2@127.0.0.1:6379/0"},
            "web": {"intake_tokens": [{"env": "T"}]},
        },
        {**ENV, "T": "tok-secret"},
    )
    text = repr(s)
    for secret in ("k3y", "pa55", "hunter2", "tok-secret"):
        assert secret not in text
    with pytest.raises(ConfigError) as info:
        parse_settings({**GOOD, "redis": {"url": "http://user:hunter2@host"}}, ENV)
    assert "hunter2" not in str(info.value) and "user:***@host" in str(info.value)


def test_numbers_must_be_finite_and_positive() -> None:
    bad = {
        **GOOD,
        "dispatch": {"max_retry_seconds": "120", "probe_interval": 0, "max_attempts": 2.5},
        "scheduler": {"horizon": float("inf")},
    }
    bad["accounts"] = {
        **GOOD["accounts"],
        "x": {
            **GOOD["accounts"]["smsc-main"],
            "limits": {"send": {"requests": 5, "per_seconds": float("nan")}},
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(bad, ENV)
    problems = "\n".join(info.value.problems)
    for expected in (
        "dispatch.max_retry_seconds: must be a positive number",
        "dispatch.probe_interval: must be a positive number",
        "dispatch.max_attempts: must be a whole number",
        "scheduler.horizon: must be a positive number",
        "accounts.x.limits.send",
    ):
        assert expected in problems, expected
