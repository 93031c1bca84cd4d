"""Tests of reading and checking the connection settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.settings import DEFAULT_AUTH_URL, DEFAULT_BASE_URL, OnTrackSettings

# Marks an extra that the connection leaves out altogether.
_DROP = object()
SECRET = "very-secret-client-key"
PASSWORD = "very-secret-user-password"


def build(
    *,
    host: str | None = "https://api.example.test/ts/ontrack/unite/v1",
    login: str | None = "techuser@api-user.hilti.cloud",
    password: str | None = PASSWORD,
    **extra: Any,
) -> OnTrackSettings:
    extras: dict[str, Any] = {"client_id": "the-client", "client_secret": SECRET}
    extras.update(extra)
    extras = {key: value for key, value in extras.items() if value is not _DROP}
    return OnTrackSettings.from_connection_fields(host=host, login=login, password=password, extra=extras)


def refused(field: str, **kwargs: Any) -> OnTrackConfigError:
    with pytest.raises(OnTrackConfigError) as info:
        build(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return info.value


class TestRequiredFields:
    def test_complete_connection_is_read(self) -> None:
        settings = build()
        assert settings.base_url == "https://api.example.test/ts/ontrack/unite/v1"
        assert settings.username == "techuser@api-user.hilti.cloud"
        assert settings.password == PASSWORD
        assert settings.client_id == "the-client"
        assert settings.client_secret == SECRET
        assert settings.auth_url == DEFAULT_AUTH_URL
        assert settings.calls_per_second == 2.0
        assert settings.page_size == 100

    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_missing_login(self, value: str | None) -> None:
        error = refused("login", login=value)
        assert "missing" in str(error)

    @pytest.mark.parametrize("value", [None, "", "  "])
    def test_missing_password(self, value: str | None) -> None:
        error = refused("password", password=value)
        assert "missing" in str(error)

    @pytest.mark.parametrize("value", [_DROP, None, ""])
    def test_missing_client_id(self, value: Any) -> None:
        error = refused("client_id", client_id=value)
        assert "missing" in str(error)

    @pytest.mark.parametrize("value", [_DROP, None, " "])
    def test_missing_client_secret(self, value: Any) -> None:
        error = refused("client_secret", client_secret=value)
        assert "missing" in str(error)

    def test_no_extra_at_all_names_client_id(self) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            OnTrackSettings.from_connection_fields(host=None, login="u", password="p", extra=None)
        assert info.value.field == "client_id"

    def test_missing_host_means_default_base_url(self) -> None:
        assert build(host=None).base_url == DEFAULT_BASE_URL
        assert build(host="").base_url == DEFAULT_BASE_URL

    def test_non_text_client_id_is_refused(self) -> None:
        error = refused("client_id", client_id=12345)
        assert "must be text" in str(error)


class TestNumericExtras:
    @pytest.mark.parametrize(
        "name",
        ["calls_per_second", "page_size", "max_page_size", "timeout", "max_retries", "retry_delay"],
    )
    @pytest.mark.parametrize("value", ["abc", -1, True, float("nan"), "NaN", [], {}])
    def test_malformed_number_names_the_field(self, name: str, value: Any) -> None:
        error = refused(name, **{name: value})
        assert repr(value) in str(error)

    @pytest.mark.parametrize("name", ["page_size", "max_page_size", "max_retries"])
    @pytest.mark.parametrize("value", [1.5, "2.5"])
    def test_fraction_for_whole_number_is_refused(self, name: str, value: Any) -> None:
        error = refused(name, **{name: value})
        assert "whole number" in str(error)

    @pytest.mark.parametrize("value", [float("inf"), "inf", 1e9])
    def test_out_of_range_is_refused(self, value: Any) -> None:
        error = refused("calls_per_second", calls_per_second=value)
        assert "between" in str(error)

    def test_max_retry_delay_negative_is_refused(self) -> None:
        refused("max_retry_delay", max_retry_delay=-1)

    def test_numbers_as_text_are_accepted(self) -> None:
        settings = build(calls_per_second="0.5", page_size="50", max_retries="3.0", timeout=12)
        assert settings.calls_per_second == 0.5
        assert settings.page_size == 50 and isinstance(settings.page_size, int)
        assert settings.max_retries == 3 and isinstance(settings.max_retries, int)
        assert settings.timeout == 12.0 and isinstance(settings.timeout, float)

    def test_zero_retries_allowed(self) -> None:
        assert build(max_retries=0).max_retries == 0

    def test_page_size_above_max_page_size_is_refused(self) -> None:
        error = refused("page_size", page_size=600, max_page_size=500)
        assert "max_page_size" in str(error)

    def test_page_size_equal_to_max_page_size_is_accepted(self) -> None:
        settings = build(page_size=1000, max_page_size=1000)
        assert (settings.page_size, settings.max_page_size) == (1000, 1000)


class TestUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8080/v1",
            "http://localhost:9000/v1",
            "http://[::1]:8080/v1",
            "http://LOCALHOST/v1",
        ],
    )
    def test_plain_http_allowed_for_loopback_host(self, url: str) -> None:
        assert build(host=url).base_url == url

    @pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hc/token", "http://localhost/token"])
    def test_plain_http_allowed_for_loopback_auth_url(self, url: str) -> None:
        assert build(auth_url=url).auth_url == url

    @pytest.mark.parametrize(
        "url", ["http://api.example.test/v1", "http://10.0.0.5/v1", "http://localhost.example.test/v1"]
    )
    def test_plain_http_refused_for_other_hosts(self, url: str) -> None:
        error = refused("host", host=url)
        assert "https://" in str(error)

    def test_plain_http_refused_for_remote_auth_url(self) -> None:
        error = refused("auth_url", auth_url="http://sso.example.test/hc/token")
        assert "https://" in str(error)

    @pytest.mark.parametrize("field", ["host", "auth_url"])
    def test_credentials_in_url_refused(self, field: str) -> None:
        error = refused(field, **{field: "https://user:pw@api.example.test/v1"})
        assert "pw" not in str(error).replace("password", "")

    @pytest.mark.parametrize("field", ["host", "auth_url"])
    def test_query_in_url_refused(self, field: str) -> None:
        error = refused(field, **{field: "https://api.example.test/v1?tenant=1"})
        assert "query" in str(error)

    def test_other_scheme_refused(self) -> None:
        refused("host", host="ftp://api.example.test/v1")

    def test_host_without_scheme_gets_https(self) -> None:
        assert build(host="api.example.test/ts/ontrack/unite/v1").base_url == (
            "https://api.example.test/ts/ontrack/unite/v1"
        )

    def test_trailing_slash_dropped(self) -> None:
        assert build(host="https://api.example.test/v1/").base_url == "https://api.example.test/v1"


class TestExtras:
    def test_legacy_prefixed_extras_are_accepted(self) -> None:
        settings = OnTrackSettings.from_connection_fields(
            host=None,
            login="u",
            password="p",
            extra={
                "extra__ontrack__client_id": "legacy-id",
                "extra__ontrack__client_secret": "legacy-secret",
                "extra__ontrack__page_size": "50",
            },
        )
        assert settings.client_id == "legacy-id"
        assert settings.client_secret == "legacy-secret"
        assert settings.page_size == 50

    def test_plain_extra_wins_over_legacy_twin(self) -> None:
        settings = build(extra__ontrack__client_id="old-id")
        assert settings.client_id == "the-client"

    def test_unknown_extra_is_refused_by_name(self) -> None:
        error = refused("page_sise", page_sise=50)
        assert "page_size" in str(error)  # the list of known extras helps spot the typo

    def test_unknown_legacy_extra_is_refused_by_plain_name(self) -> None:
        refused("colour", extra__ontrack__colour="red")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("assets/", "/assets"), ("/assets/", "/assets"), ("v2/assets", "/v2/assets"), (" tools ", "/tools")],
    )
    def test_path_overrides_are_normalised(self, value: str, expected: str) -> None:
        settings = build(assets_path=value)
        assert settings.assets_path == expected
        assert settings.path_for("assets") == expected

    @pytest.mark.parametrize("value", ["https://x.example.test/assets", "assets?x=1", "my assets"])
    def test_path_override_that_is_no_path_is_refused(self, value: str) -> None:
        refused("assets_path", assets_path=value)

    def test_text_overrides(self) -> None:
        settings = build(page_param="pageNumber", result_key="items", total_key="count", scope="X.Y")
        assert (settings.page_param, settings.result_key, settings.total_key, settings.scope) == (
            "pageNumber",
            "items",
            "count",
            "X.Y",
        )

    def test_unknown_resource_refused(self) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            build().path_for("tools")
        assert info.value.field == "resource"


class TestExtraAsAWhole:
    @pytest.mark.parametrize("extra", [["client_id", SECRET], f"client_secret={SECRET}", 42, True])
    def test_an_extra_that_is_no_object_is_refused(self, extra: Any) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            OnTrackSettings.from_connection_fields(host=None, login="u", password="p", extra=extra)

        assert info.value.field == "extra"
        assert "JSON object" in str(info.value)
        assert SECRET not in str(info.value)

    def test_the_hook_names_the_extra_and_the_connection(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow_provider_ontrack.hooks.ontrack import OnTrackHook

        extra = json.dumps(["client_id", SECRET])
        connection = {"conn_type": "ontrack", "login": "u", "password": "p", "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_ONTRACK_LISTED", json.dumps(connection))

        with pytest.raises(OnTrackConfigError) as info:
            OnTrackHook("ontrack_listed").get_asset("A1")

        assert info.value.field == "extra"
        assert "got list" in str(info.value)
        assert "'ontrack_listed'" in str(info.value)
        assert SECRET not in str(info.value)


class TestSecrets:
    def test_repr_hides_both_secrets(self) -> None:
        settings = build()
        text = repr(settings) + str(settings)
        assert SECRET not in text
        assert PASSWORD not in text
        assert "the-client" in text  # the repr is still useful

    def test_secrets_property(self) -> None:
        assert set(build().secrets) == {SECRET, PASSWORD}

    def test_errors_never_show_secrets(self) -> None:
        with pytest.raises(OnTrackConfigError) as info:
            build(page_size="lots")
        assert SECRET not in str(info.value)
        assert PASSWORD not in str(info.value)
