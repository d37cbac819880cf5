"""AMAS_LLM_*: providers parsed from JSON, bad ones named in one line, keys never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amas.config import load_settings
from amas.errors import ConfigError
from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.unit

KEY = "sk-settings-Wd93Kx1"
EXAMPLE = json.dumps([
    {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:8080/v1/", "model": "gpt-4o-mini",
     "api_key": KEY, "input_price_per_1k": 0.15, "output_price_per_1k": 0.6},
    {"name": "ollama", "kind": "ollama", "base_url": "http://127.0.0.1:11434", "model": "llama3.2",
     "timeout_seconds": 90},
])


def test_providers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", EXAMPLE)
    monkeypatch.setenv("AMAS_LLM_MAX_RETRIES", "4")
    llm = load_settings().llm
    local, ollama = llm.providers
    assert (local.name, local.kind, local.base_url, local.model) == ("local", "openai", "http://127.0.0.1:8080/v1",
                                                                     "gpt-4o-mini")
    assert local.api_key is not None and local.api_key.get_secret_value() == KEY
    assert (local.input_price_per_1k, local.output_price_per_1k, local.timeout_seconds) == (0.15, 0.6, None)
    assert (ollama.kind, ollama.api_key, ollama.timeout_seconds) == ("ollama", None, 90)
    assert llm.max_retries == 4
    assert (llm.timeout_seconds, llm.backoff_seconds, llm.breaker_failures, llm.breaker_reset_seconds,
            llm.max_tokens, llm.temperature) == (30, 0.5, 3, 60, 400, 0)
    assert KEY not in repr(llm) and KEY not in repr(load_settings())


@pytest.mark.parametrize("value", ["", "[]"])
def test_empty_means_no_provider(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", value)
    assert load_settings().llm.providers == []


GOOD = {"name": "a", "kind": "openai", "base_url": "http://h/v1", "model": "m"}


@pytest.mark.parametrize(("value", "message"), [
    ('[{"name": "a", "kind": "openai"', "not valid JSON (Expecting ',' delimiter at line 1 column 32)"),
    ('{"name": "a"}', "must be a JSON list of provider objects, not a JSON object"),
    ('["local"]', "provider 1: must be a JSON object, not a JSON string"),
    (json.dumps([{**GOOD, "kind": "anthropic", "api_key": KEY}]),
     "provider 1 ('a'): kind: Input should be 'openai' or 'ollama'"),
    (json.dumps([GOOD, {**GOOD, "name": "b", "base_url": "ftp://h/v1"}]),
     "provider 2 ('b'): base_url: must be an http:// or https:// URL with a host"),
    (json.dumps([{**GOOD, "base_url": f"https://user:{KEY}@h/v1"}]),
     "provider 1 ('a'): base_url: must not carry credentials; put the key in api_key or api_key_env"),
    (json.dumps([{k: v for k, v in GOOD.items() if k != "model"}]), "provider 1 ('a'): model: Field required"),
    (json.dumps([{**GOOD, "apikey": KEY}]), "provider 1 ('a'): apikey: Extra inputs are not permitted"),
    (json.dumps([{**GOOD, "api_key": KEY, "api_key_env": "OPENAI_API_KEY"}]),
     "provider 1 ('a'): give api_key or api_key_env, not both"),
    (json.dumps([{**GOOD, "timeout_seconds": 0}]), "provider 1 ('a'): timeout_seconds: Input should be greater than 0"),
    (json.dumps([GOOD, GOOD]), "provider names must be unique; repeated: a"),
])
def test_a_bad_provider_list_names_the_variable_and_the_problem(monkeypatch: pytest.MonkeyPatch, value: str,
                                                                  message: str) -> None:
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == f"AMAS_LLM_PROVIDERS: {message}"
    assert KEY not in str(info.value)


@pytest.mark.parametrize(("name", "value"), [
    ("AMAS_LLM_TIMEOUT_SECONDS", "0"),
    ("AMAS_LLM_MAX_RETRIES", "-1"),
    ("AMAS_LLM_BREAKER_FAILURES", "0"),
    ("AMAS_LLM_TEMPERATURE", "hot"),
])
def test_bad_globals_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}: .*got"):
        load_settings()


def test_redacted_shows_providers_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", EXAMPLE)
    shown = load_settings().redacted()["llm"]
    assert KEY not in repr(shown) and KEY not in json.dumps(shown)
    assert shown["providers"][0] == {
        "name": "local", "kind": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "gpt-4o-mini",
        "api_key_env": None, "timeout_seconds": None, "input_price_per_1k": 0.15, "output_price_per_1k": 0.6,
        "api_key": "**********",
    }
    assert shown["providers"][1]["api_key"] == "(not set)"
    assert shown["max_tokens"] == 400


def test_config_show_prints_providers_without_keys(isolated_settings: Path) -> None:
    env = {**os.environ, "AMAS_LLM_PROVIDERS": EXAMPLE}
    result = subprocess.run([sys.executable, "-m", "amas.cli.main", "config", "show", "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr
    shown = json.loads(result.stdout)["llm"]
    assert [p["name"] for p in shown["providers"]] == ["local", "ollama"]
