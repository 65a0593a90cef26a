"""Settings: the original sample's names, from every source in the documented order, secrets kept out of sight."""

from __future__ import annotations

import json

import pytest

from percept_core import ConfigError, Curator, Settings
from percept_core.config import read_setting

SAMPLE = {
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_CLIENT_SECRET": "client-secret-value-xyz",
    "AZURE_TENANT_ID": "66666666-7777-8888-9999-000000000000",
    "mm_server_url": "https://test-mm.westus2.cloudapp.azure.com",
    "mm_storage_account": "perceptmmstore",
    "mm_telemetry_storage_container": "data",
    "custom_vision_endpoint": "https://westus2.api.cognitive.microsoft.com/",
    "custom_vision_training_key": "training-key-value-abc",
    "custom_vision_project_id": "0a8b5d3e-1111-4222-8333-944455556666",
}


def write_local_settings(path, values):
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))


def test_reads_the_original_functions_local_settings_json(clean_environment):
    write_local_settings(clean_environment / "local.settings.json", SAMPLE)
    settings = Settings.load()
    assert settings.mm_server_url == SAMPLE["mm_server_url"]
    assert settings.custom_vision_project_id == SAMPLE["custom_vision_project_id"]
    assert settings.azure_client_secret == SAMPLE["AZURE_CLIENT_SECRET"]
    assert settings.source_of("mm_storage_account").startswith("local.settings.json")


def test_sources_in_order_argument_environment_dotenv_local_settings_streamlit(clean_environment, monkeypatch):
    home = clean_environment / "home"
    (home / ".streamlit").mkdir()
    (home / ".streamlit" / "secrets.toml").write_text(
        'mm_server_url = "https://from-secrets.example.com"\nmm_storage_account = "fromsecrets"\n'
        'mm_telemetry_storage_container = "secrets-container"\ncustom_vision_tier = "F0"\n'
    )
    write_local_settings(
        clean_environment / "local.settings.json",
        {
            "mm_server_url": "https://from-local.example.com",
            "mm_storage_account": "fromlocal",
            "mm_telemetry_storage_container": "local-container",
        },
    )
    (clean_environment / ".env").write_text(
        "mm_server_url=https://from-dotenv.example.com\nmm_storage_account=fromdotenv\n"
    )
    monkeypatch.setenv("mm_server_url", "https://from-environment.example.com")

    settings = Settings.load(mm_server_url="https://from-argument.example.com")
    assert settings.mm_server_url == "https://from-argument.example.com"
    assert settings.source_of("mm_server_url") == "argument"
    assert settings.mm_storage_account == "fromdotenv"
    assert settings.source_of("mm_storage_account").startswith(".env")
    assert settings.mm_telemetry_storage_container == "local-container"
    assert settings.custom_vision_tier == "F0"
    assert settings.source_of("custom_vision_tier") == "Streamlit secrets"

    assert Settings.load().mm_server_url == "https://from-environment.example.com"


def test_missing_setting_names_the_setting_and_the_places_looked_in(clean_environment):
    settings = Settings.load()
    with pytest.raises(ConfigError) as caught:
        settings.require("mm_server_url", "custom_vision_training_key")
    text = str(caught.value)
    assert "mm_server_url" in text and "custom_vision_training_key" in text
    for place in ("environment", ".env", "local.settings.json", "Streamlit secrets"):
        assert place in text


def test_malformed_settings_say_which_setting_and_where_it_came_from(clean_environment, monkeypatch):
    monkeypatch.setenv("custom_vision_project_id", "not-a-guid")
    with pytest.raises(ConfigError, match="custom_vision_project_id is not a GUID.*environment"):
        Settings.load()
    monkeypatch.delenv("custom_vision_project_id")
    (clean_environment / "local.settings.json").write_text("{not json")
    with pytest.raises(ConfigError, match="local.settings.json is not valid JSON"):
        Settings.load()
    write_local_settings(clean_environment / "local.settings.json", {"mm_server_url": "ftp://mm.example.com"})
    with pytest.raises(ConfigError, match="mm_server_url is not an http"):
        Settings.load()


def test_plain_http_is_refused_off_this_machine_unless_opted_in(clean_environment):
    with pytest.raises(ConfigError, match="plain http:// to mm.example.com"):
        Settings.load(mm_server_url="http://mm.example.com")
    with pytest.raises(ConfigError, match="custom_vision_endpoint uses plain http://"):
        Settings.load(custom_vision_endpoint="http://cv.example.com")
    assert Settings.load(mm_server_url="http://127.0.0.1:8711").mm_server_url == "http://127.0.0.1:8711"
    assert Settings.load(mm_server_url="http://localhost:8711").mm_server_url == "http://localhost:8711"
    opted = Settings.load(mm_server_url="http://mm.example.com", percept_allow_insecure_http="true")
    assert opted.mm_server_url == "http://mm.example.com"


def test_repr_and_describe_never_show_a_secret(clean_environment):
    write_local_settings(clean_environment / "local.settings.json", SAMPLE)
    settings = Settings.load(mm_bootstrap_secret="bootstrap-secret-qrs", mm_storage_connection_string="AccountKey=zzz")
    shown = repr(settings) + str(settings) + json.dumps(settings.describe())
    for secret in ("client-secret-value-xyz", "training-key-value-abc", "bootstrap-secret-qrs", "AccountKey=zzz"):
        assert secret not in shown
    assert "***" in shown
    rows = {row["setting"]: row for row in settings.describe()}
    assert rows["custom_vision_training_key"]["value"] == "***"
    assert rows["mm_server_url"]["value"] == SAMPLE["mm_server_url"]
    assert "custom_vision_training_key" in shown  # the name is shown, its value is not
    assert "training-key-value-abc" in settings.secret_values()


def test_curator_with_no_argument_loads_settings_from_the_usual_sources(clean_environment, monkeypatch):
    write_local_settings(clean_environment / "local.settings.json", SAMPLE)
    curator = Curator()
    assert curator.settings.custom_vision_endpoint == SAMPLE["custom_vision_endpoint"]
    assert "training-key-value-abc" not in repr(curator)


def test_one_setting_is_read_afresh_in_the_order_of_a_full_load(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("percept_reviewers=from-dotenv@contoso.example\n", encoding="utf-8")
    secrets = {"percept_reviewers": "a@contoso.example, b@contoso.example"}
    assert read_setting("reviewers", environ={}, secrets=secrets, env_file=None) == (
        "a@contoso.example",
        "b@contoso.example",
    )
    assert read_setting("reviewers", environ={}, secrets=secrets, env_file=env_file) == ("from-dotenv@contoso.example",)
    environ = {"PERCEPT_REVIEWERS": "env@contoso.example"}
    assert read_setting("reviewers", environ=environ, secrets=secrets, env_file=env_file) == ("env@contoso.example",)
    assert read_setting("reviewers", environ={}, secrets={}, env_file=None, local_settings_file=None) is None
