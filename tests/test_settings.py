"""Configuration: every bad setting stops start-up with one line naming the key."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config.settings import ConfigError, load_settings
from tidings.devsite import new_api_key, new_webhook_secret

GOOD_SECRET = new_webhook_secret()
GOOD_KEY = new_api_key()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ``TIDINGS_*`` from the outer environment, and no ``.env`` in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("TIDINGS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def site(site_id: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"id": site_id, "webhook_secrets": [GOOD_SECRET], "api_keys": [GOOD_KEY], **extra}


def config_error() -> str:
    """Load settings from the environment, expecting a :class:`ConfigError`; its message."""
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.strip(), "an empty message helps nobody"
    assert "\n" not in message, f"not one line: {message!r}"
    return message


def test_defaults_without_any_environment() -> None:
    settings = load_settings()
    assert settings.redis_prefix == "tidings"
    assert settings.email.port == 587
    assert settings.codes.digits == 6
    assert settings.sites == []


def test_nested_env_sets_one_field_and_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_EMAIL__PORT", "2525")
    monkeypatch.setenv("TIDINGS_EMAIL__HOST", "mail.internal")
    settings = load_settings()
    assert settings.email.port == 2525
    assert settings.email.host == "mail.internal"
    assert settings.email.security == "starttls"  # untouched default


def test_env_file_in_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("TIDINGS_EMAIL__PORT=2626\n", encoding="utf-8")
    assert load_settings().email.port == 2626


@pytest.mark.parametrize("value", ["3", "11", "six"])
def test_bad_code_digits_names_the_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TIDINGS_CODES__DIGITS", value)
    message = config_error()
    assert message.startswith("TIDINGS_CODES__DIGITS: ")


def test_bad_nested_integer_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_EMAIL__PORT", "not-a-port")
    assert config_error().startswith("TIDINGS_EMAIL__PORT: ")


def test_webhook_secret_without_whsec_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "plain-secret-value-that-should-never-be-printed"
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site(webhook_secrets=[secret])]))
    message = config_error()
    assert message.startswith("TIDINGS_SITES__0__WEBHOOK_SECRETS: ")
    assert "whsec_" in message
    assert secret not in message


def test_webhook_secret_with_too_few_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site(webhook_secrets=["whsec_c2hvcnQ="])]))
    message = config_error()
    assert message.startswith("TIDINGS_SITES__0__WEBHOOK_SECRETS: ")
    assert "24" in message


def test_short_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site(api_keys=["tk_short_key"])]))
    message = config_error()
    assert message.startswith("TIDINGS_SITES__0__API_KEYS: ")
    assert "24 characters" in message
    assert "tk_short_key" not in message


def test_invalid_json_in_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", f'[{{"id": "shop", "webhook_secrets": ["{GOOD_SECRET}"]')
    message = config_error()
    assert message == "TIDINGS_SITES: not valid JSON"
    assert GOOD_SECRET not in message


def test_sites_from_env_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site(name="Acme", channels=["email"])]))
    [loaded] = load_settings().sites
    assert loaded.id == "shop"
    assert loaded.display_name == "Acme"
    assert loaded.webhook_secrets[0].get_secret_value() == GOOD_SECRET
    assert GOOD_SECRET not in repr(loaded)  # SecretStr: never printed


def _sites_toml(path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(body, encoding="utf-8")
    monkeypatch.setenv("TIDINGS_SITES_FILE", str(path))
    return path


def test_sites_file_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sites_toml(
        tmp_path / "sites.toml",
        f'[[sites]]\nid = "blog"\nname = "The Blog"\nwebhook_secrets = ["{GOOD_SECRET}"]\n'
        f'api_keys = ["{GOOD_KEY}"]\ndefault_locale = "zh-CN"\n',
        monkeypatch,
    )
    [loaded] = load_settings().sites
    assert (loaded.id, loaded.name, loaded.default_locale) == ("blog", "The Blog", "zh")


def test_missing_sites_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "sites.toml"
    monkeypatch.setenv("TIDINGS_SITES_FILE", str(missing))
    message = config_error()
    assert message.startswith("TIDINGS_SITES_FILE: ")
    assert str(missing) in message
    assert "does not exist" in message


def test_sites_file_that_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sites.d"
    folder.mkdir()
    monkeypatch.setenv("TIDINGS_SITES_FILE", str(folder))
    message = config_error()
    assert message.startswith("TIDINGS_SITES_FILE: ")
    assert str(folder) in message


def test_invalid_toml_sites_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _sites_toml(tmp_path / "sites.toml", '[[sites]\nid = "shop"\n', monkeypatch)
    message = config_error()
    assert message.startswith("TIDINGS_SITES_FILE: ")
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 1" in message


def test_sites_file_with_bad_field_names_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sites_toml(
        tmp_path / "sites.toml",
        f'[[sites]]\nid = "shop"\nwebhook_secrets = ["{GOOD_SECRET}"]\napi_keys = ["{GOOD_KEY}"]\n'
        f'[[sites]]\nid = "blog"\nwebhook_secrets = ["{GOOD_SECRET}"]\n'
        f'api_keys = ["{GOOD_KEY}"]\nchannels = ["pigeon"]\n',
        monkeypatch,
    )
    message = config_error()
    assert message.startswith(f"{path}: sites.1.channels")
    assert "'email'" in message  # says what is allowed


def test_sites_file_with_unknown_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _sites_toml(
        tmp_path / "sites.toml",
        f'[[sites]]\nid = "shop"\nwebhook_secrets = ["{GOOD_SECRET}"]\n'
        f'api_keys = ["{GOOD_KEY}"]\ncallbak_url = "https://typo.example"\n',
        monkeypatch,
    )
    message = config_error()
    assert message.startswith(f"{path}: sites.0.callbak_url")


def test_sites_file_bad_secret_is_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk_live_this_is_not_a_webhook_secret_at_all"
    path = _sites_toml(
        tmp_path / "sites.toml",
        f'[[sites]]\nid = "shop"\nwebhook_secrets = ["{secret}"]\napi_keys = ["{GOOD_KEY}"]\n',
        monkeypatch,
    )
    message = config_error()
    assert message.startswith(f"{path}: sites.0.webhook_secrets")
    assert secret not in message
    assert GOOD_KEY not in message


def test_duplicate_site_ids_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site("shop"), site("blog"), site("shop")]))
    message = config_error()
    assert "'shop'" in message
    assert "twice" in message


def test_duplicate_site_id_across_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site("shop")]))
    _sites_toml(
        tmp_path / "sites.toml",
        f'[[sites]]\nid = "shop"\nwebhook_secrets = ["{GOOD_SECRET}"]\napi_keys = ["{GOOD_KEY}"]\n',
        monkeypatch,
    )
    assert "'shop'" in config_error()


def test_short_secret_key_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SECRET_KEY", "too-short-key")
    message = config_error()
    assert message.startswith("TIDINGS_SECRET_KEY: ")
    assert "32" in message
    assert "too-short-key" not in message


def test_missing_secret_key_is_required_by_name() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match=r"^TIDINGS_SECRET_KEY: required"):
        settings.require_secret_key()
    with pytest.raises(ConfigError, match=r"^TIDINGS_REDIS_URL: required"):
        settings.require_redis_url()


def test_per_site_code_policy_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_CODES__MAX_ATTEMPTS", "3")
    monkeypatch.setenv(
        "TIDINGS_SITES",
        json.dumps([site("shop", codes={"digits": 8, "ttl_seconds": 120}), site("blog")]),
    )
    settings = load_settings()
    shop, blog = settings.sites
    shop_policy = settings.policy_for(shop)
    assert (shop_policy.digits, shop_policy.ttl_seconds) == (8, 120)
    assert shop_policy.max_attempts == 3  # the global value still applies where not overridden
    blog_policy = settings.policy_for(blog)
    assert (blog_policy.digits, blog_policy.ttl_seconds, blog_policy.max_attempts) == (6, 600, 3)


def test_per_site_code_policy_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site(codes={"digits": 12})]))
    assert config_error().startswith("TIDINGS_SITES__0__CODES__DIGITS: ")


def _run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIDINGS_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "tidings"), *args],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TIDINGS_CODES__DIGITS": "3"}, "TIDINGS_CODES__DIGITS"),
        ({"TIDINGS_SECRET_KEY": "short"}, "TIDINGS_SECRET_KEY"),
        ({"TIDINGS_SITES": "[not json"}, "TIDINGS_SITES"),
        ({"TIDINGS_REDIS_URL": ""}, "TIDINGS_REDIS_URL"),
    ],
)
def test_cli_exits_with_one_clear_line(tmp_path: Path, env: dict[str, str], key: str) -> None:
    result = _run_cli(tmp_path, "web", **env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {key}: ")
    assert "Traceback" not in result.stderr + result.stdout
    for value in env.values():
        if len(value) > 4:
            assert value not in result.stderr


def test_ronglian_without_credentials_names_the_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDINGS_SMS__PROVIDER", "ronglian")
    monkeypatch.setenv("TIDINGS_SMS__RONGLIAN__ACCOUNT_SID", "8a216da8")
    monkeypatch.setenv("TIDINGS_SMS__RONGLIAN__AUTH_TOKEN", "do-not-print-me")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("TIDINGS_SMS__RONGLIAN__APP_ID: required")
    assert "do-not-print-me" not in str(info.value)


def test_ronglian_templates_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SMS__PROVIDER", "ronglian")
    monkeypatch.setenv("TIDINGS_SMS__RONGLIAN__ACCOUNT_SID", "8a216da8")
    monkeypatch.setenv("TIDINGS_SMS__RONGLIAN__AUTH_TOKEN", "token")
    monkeypatch.setenv("TIDINGS_SMS__RONGLIAN__APP_ID", "app")
    monkeypatch.setenv(
        "TIDINGS_SMS__RONGLIAN__TEMPLATES",
        '{"verification": {"id": "77", "datas": ["{code}", "{minutes}", "{site_name}"]}}',
    )
    settings = load_settings()
    template = settings.sms.ronglian.templates["verification"]
    assert (template.id, template.datas) == ("77", ["{code}", "{minutes}", "{site_name}"])


def test_bad_default_region_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SMS__DEFAULT_REGION", "china")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("TIDINGS_SMS__DEFAULT_REGION:")


def test_bot_token_without_webhook_secret_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_TELEGRAM__TOKEN", "123456:do-not-print-this-token")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("TIDINGS_TELEGRAM__WEBHOOK_SECRET: required")
    assert "do-not-print" not in str(info.value)


def test_webhook_secret_outside_telegram_alphabet_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDINGS_TELEGRAM__WEBHOOK_SECRET", "has spaces!")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("TIDINGS_TELEGRAM__WEBHOOK_SECRET:")
    assert "has spaces" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "key", "allow"),
    [
        ("TIDINGS_SMS__PROVIDER", "console", "TIDINGS_SMS__PROVIDER",
         "TIDINGS_SMS__ALLOW_CONSOLE_IN_PRODUCTION"),
        ("TIDINGS_EMAIL__BACKEND", "outbox", "TIDINGS_EMAIL__BACKEND",
         "TIDINGS_EMAIL__ALLOW_OUTBOX_IN_PRODUCTION"),
    ],
)  # fmt: skip
def test_a_production_role_refuses_dev_providers_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, allow: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert message.startswith(f"{key}: {value} keeps")
    assert "plain text" in message
    assert allow in message

    monkeypatch.setenv(allow, "true")
    assert load_settings()  # said on purpose: a staging box without a provider

    monkeypatch.delenv(allow)
    assert load_settings(dev=True).dev  # what `tidings dev` runs with


@pytest.mark.parametrize("role", ["web", "worker"])
def test_a_production_role_with_a_dev_provider_exits_with_one_line(
    tmp_path: Path, role: str
) -> None:
    result = _run_cli(tmp_path, role, TIDINGS_SMS__PROVIDER="console")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: TIDINGS_SMS__PROVIDER: console keeps texts")
    assert "Traceback" not in result.stderr + result.stdout


def test_a_ca_file_that_does_not_exist_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDINGS_EMAIL__CA_FILE", str(tmp_path / "missing.pem"))
    assert config_error().startswith("TIDINGS_EMAIL__CA_FILE:")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("TIDINGS_EMAIL__CA_FILE", str(bundle))
    assert load_settings().email.ca_file == bundle


def test_a_sender_with_a_non_ascii_local_part_names_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every relay must take the sender, SMTPUTF8 or not.
    monkeypatch.setenv("TIDINGS_EMAIL__FROM_ADDRESS", "通知@example.com")
    assert config_error().startswith("TIDINGS_EMAIL__FROM_ADDRESS:")
    monkeypatch.setenv("TIDINGS_EMAIL__FROM_ADDRESS", "codes@bücher.example")
    assert load_settings().email.from_address == "codes@bücher.example"


# Published example secrets (config/examples.py): refused outside development.
REPO = Path(__file__).resolve().parent.parent
FORMER_COMPOSE_DEFAULT_KEY = "change-me-to-48-random-characters-before-real-use"


def _published_example_values() -> list[str]:
    """Every secret-looking value a reader can copy from our docs and example files."""
    texts = [
        (REPO / name).read_text(encoding="utf-8")
        for name in ("README.md", ".env.example", "deploy/sites.example.toml", "compose.yaml")
    ]
    found: set[str] = {FORMER_COMPOSE_DEFAULT_KEY}
    for text in texts:
        found.update(re.findall(r"whsec_[A-Za-z0-9+/=]{16,}|tk_[A-Za-z0-9_-]{16,}", text))
        found.update(
            value.strip("\"'")
            for value in re.findall(r"(?:SECRET_KEY|WEBHOOK_SECRET)=(\S+)", text)
            if not value.startswith("$")
        )
    return sorted(found)


def test_every_published_example_is_known() -> None:
    from config.examples import is_example

    values = _published_example_values()
    assert len(values) >= 4  # the scan above finds the examples we ship
    assert [value for value in values if not is_example(value)] == []
    assert not is_example(new_webhook_secret())
    assert not is_example(new_api_key())
    assert not is_example(secrets.token_urlsafe(48))


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("TIDINGS_SECRET_KEY", FORMER_COMPOSE_DEFAULT_KEY, "TIDINGS_SECRET_KEY"),
        ("TIDINGS_SECRET_KEY", "please-change-me-" + "x" * 32, "TIDINGS_SECRET_KEY"),
        ("TIDINGS_TELEGRAM__WEBHOOK_SECRET", "a-long-random-string-of-A-Za-z0-9_-",
         "TIDINGS_TELEGRAM__WEBHOOK_SECRET"),
    ],
)  # fmt: skip
def test_a_production_role_refuses_an_example_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = config_error()
    assert message.startswith(f"{key}: this is a published example")
    assert "secrets.token_urlsafe(48)" in message  # how to make a real one
    assert value not in message
    assert load_settings(dev=True).dev  # development may use anything


def test_a_production_role_refuses_the_example_sites_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SITES_FILE", str(REPO / "deploy" / "sites.example.toml"))
    message = config_error()
    assert message.startswith("sites: site 'demo' webhook secret 1 is a published example")
    assert "tidings sites new demo" in message
    assert "whsec_" not in message

    # A real secret first, the example second (rotation): still refused, by number.
    example = load_settings(dev=True).sites[0]
    secret = example.webhook_secrets[0].get_secret_value()
    api_key = example.api_keys[0].get_secret_value()
    monkeypatch.delenv("TIDINGS_SITES_FILE")
    monkeypatch.setenv(
        "TIDINGS_SITES", json.dumps([site("shop", webhook_secrets=[GOOD_SECRET, secret])])
    )
    assert config_error().startswith("sites: site 'shop' webhook secret 2 is a published")
    monkeypatch.setenv("TIDINGS_SITES", json.dumps([site("shop", api_keys=[api_key])]))
    assert config_error().startswith("sites: site 'shop' API key 1 is a published")


@pytest.mark.parametrize(
    ("role", "env"),
    [
        ("web", {"TIDINGS_SECRET_KEY": FORMER_COMPOSE_DEFAULT_KEY}),
        ("worker", {"TIDINGS_SECRET_KEY": FORMER_COMPOSE_DEFAULT_KEY}),
        ("scheduler", {"TIDINGS_SECRET_KEY": FORMER_COMPOSE_DEFAULT_KEY}),
        ("web", {"TIDINGS_SITES_FILE": str(REPO / "deploy" / "sites.example.toml")}),
    ],
)
def test_each_role_with_an_example_secret_exits_with_one_line(
    tmp_path: Path, role: str, env: dict[str, str]
) -> None:
    # A real key beside the example sites file, so that only the sites are the problem.
    result = _run_cli(tmp_path, role, **{"TIDINGS_SECRET_KEY": secrets.token_urlsafe(48), **env})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "is a published example, not a secret" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert FORMER_COMPOSE_DEFAULT_KEY not in result.stderr


def test_dev_runs_with_its_generated_key_and_demo_site(tmp_path: Path) -> None:
    from config.examples import is_example
    from tidings.dev import dev_settings

    settings = dev_settings(tmp_path / "data", "redis://127.0.0.1:1/0", 8080)
    assert settings.dev
    assert settings.secret_key is not None
    assert not is_example(settings.secret_key.get_secret_value())
    # The generated demo site passes the production check too.
    production = load_settings(
        secret_key=settings.secret_key.get_secret_value(), sites=list(settings.sites)
    )
    assert [s.id for s in production.sites] == [s.id for s in settings.sites]
