"""The Connections page and the sidebar: where the app is connected, how healthy, and never a secret."""

from __future__ import annotations

import getpass

from devstack.servers import free_port
from tests.app.conftest import button, texts

PAGE = "views/connections.py"


def secrets_of(stack) -> list[str]:
    account_key = stack.storage_connection_string.split("AccountKey=")[1].split(";")[0]
    return [stack.training_key, stack.mm_config.bootstrap_secret, account_key]


def test_settings_in_use_show_where_each_came_from_with_secrets_redacted(app_env):
    at = app_env.open(PAGE)
    rows = {row["setting"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert rows["mm_server_url"]["value"] == app_env.stack.mm.url
    assert rows["mm_server_url"]["source"] == "environment"
    assert rows["custom_vision_project_id"]["value"] == app_env.project_id
    assert rows["custom_vision_training_key"]["value"] == "***"
    assert rows["mm_storage_connection_string"]["value"] == "***"
    assert rows["mm_telemetry_storage_container"]["source"] == "environment"
    assert rows["percept_reviewers"]["source"] == "unset"
    shown = texts(at)
    assert not [s for s in secrets_of(app_env.stack) if s in shown]


def test_test_connections_gives_one_clear_message_per_service(app_env):
    at = app_env.open(PAGE)
    button(at, "Test connections").click().run()
    messages = [s.value for s in at.success]
    assert len(messages) == 3 and not at.error
    assert messages[0].startswith("**Storage**: container 'data' is readable")
    assert messages[1].startswith("**MM server**: bootstrap answered") and "login succeeded" in messages[1]
    assert messages[2].startswith("**Custom Vision**: project 'app ")


def test_a_service_that_cannot_be_reached_is_named_with_a_red_dot(app_env_factory):
    harness = app_env_factory(mm_server_url=f"http://127.0.0.1:{free_port()}")
    at = harness.open()
    sidebar = [m.value for m in at.sidebar.markdown]
    assert any(line.startswith(":red[●] **MM server**") for line in sidebar)
    assert any(line.startswith(":green[●] **Storage**") for line in sidebar)
    assert at.error[0].value == "**service error**"  # the tiles say why they are empty
    assert any(c.value.startswith("Could not reach the MM server") for c in at.caption)

    at.switch_page(PAGE).run()
    assert any(m.value.startswith(":red[●] **MM server**") for m in at.sidebar.markdown)  # on every page
    button(at, "Test connections").click().run()
    assert [e.value.split(":")[0] for e in at.error] == ["**MM server**"]
    assert "Could not reach" in at.error[0].value or "MM server" in at.error[0].value
    assert len(at.success) == 2


def test_sidebar_shows_the_environment_and_each_service_with_a_health_dot(app_env):
    at = app_env.open()
    sidebar = [m.value for m in at.sidebar.markdown]
    assert at.sidebar.caption[0].value == "**Local devstack**"
    storage, mm, customvision = sidebar
    assert storage.startswith(":green[●] **Storage**") and "devstoreaccount1" in storage and "container data" in storage
    assert mm.startswith(":green[●] **MM server**") and app_env.stack.mm.url in mm
    project = app_env.trainer().get_project(app_env.project_id)
    assert customvision.startswith(":green[●] **Custom Vision**")
    assert f"{project.name} (classification, Multilabel)" in customvision
    assert at.sidebar.caption[-1].value == f"Reviewer: {getpass.getuser()}"
    assert not [s for s in secrets_of(app_env.stack) if s in texts(at)]


def test_every_page_is_in_the_navigation_and_renders(app_env):
    at = app_env.open()
    titles = []
    for page in (
        "views/review.py",
        "views/push_untagged.py",
        "views/activity.py",
        "views/export.py",
        "views/connections.py",
    ):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        titles.append(at.title[0].value)
    assert titles == ["Review", "Push untagged", "Activity", "Export", "Connections"]


def test_missing_settings_stop_the_pages_with_what_is_missing(app_env, monkeypatch):
    monkeypatch.delenv("custom_vision_endpoint")
    at = app_env.open()
    assert "custom_vision_endpoint" in at.error[0].value
    assert not at.exception


def test_each_run_reads_the_settings_once_and_a_change_shows_at_the_next_run(app_env, monkeypatch, settings_reads):
    """The sidebar and the page of one run show one reading of the settings; the next click reads them again."""
    reads = settings_reads
    at = app_env.open(PAGE)
    assert at.title[0].value == "Connections" and len(reads) == 1
    monkeypatch.setenv("percept_near_duplicate_distance", "3")
    at.run()
    rows = {row["setting"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert rows["percept_near_duplicate_distance"]["value"] == "3" and len(reads) == 2


def test_an_f0_key_shows_the_f0_quota_and_an_unset_rate_paces_at_10_calls_a_second(app_env_factory, monkeypatch):
    harness = app_env_factory(custom_vision_tier="F0")
    monkeypatch.delenv("custom_vision_rate_per_second")  # never set, as on a user's machine
    at = harness.open(PAGE)
    rows = {row["setting"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert (rows["custom_vision_tier"]["value"], rows["custom_vision_tier"]["source"]) == ("F0", "environment")
    rate = rows["custom_vision_rate_per_second"]
    assert float(rate["value"]) == 10 and rate["source"] == "default"
    # The client the app pushes with paces at the default rate, a little under it (a 429 costs a Retry-After).
    assert harness.curator.customvision.limiter.rate == 10 * 0.96

    activity = harness.open("views/activity.py")
    assert {m.label: m.value for m in activity.metric}["Images / quota"] == "0 / 5,000"
    push = harness.open("views/push_untagged.py")
    button(push, "Dry run").click().run()
    assert {m.label: m.value for m in push.metric}["Project headroom"] == "5,000"
