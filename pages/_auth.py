"""The sign-in gate every run of the app passes before any page: who is reviewing, and may they.

Local use (no `[auth]` in Streamlit's secrets): the app binds to 127.0.0.1 and the reviewer is the OS
user, as the CLI records it. A shared deployment configures `[auth]` (Microsoft Entra ID through
Streamlit's OpenID Connect: `st.login`, `st.user`, `st.logout`) and lists its reviewers in
`percept_reviewers`; then only a signed-in user whose e-mail is on that list gets further than this
module. Everyone else gets one page from here and the run stops: no navigation, no sidebar, no settings,
no blob names, no thumbnails. Whatever cannot be decided (secrets that do not parse, settings that do
not load, an empty list, no e-mail in the identity token) refuses: the gate fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import streamlit as st
from streamlit.logger import get_logger

from percept_core import ConfigError, Settings
from percept_core.ledger import default_actor

REVIEWER_KEY = "reviewer"
_SHARED_KEYS = ("redirect_uri", "cookie_secret")
_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
_ENTRA_HOSTS = {  # Microsoft Entra ID's sign-in hosts: global, US Government, China (21Vianet), and legacy
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
}
_ENTRA_SHARED_TENANTS = {"common", "organizations", "consumers"}
_NO_SECRETS_FILE = "no-secrets-found"  # Streamlit's error id when no secrets file exists at all

_log = get_logger("percept_curator.auth")  # the server log, in Streamlit's format


@dataclass(frozen=True)
class Admission:
    """What the gate decided for this run: a reviewer to record, or the one page this visitor gets."""

    reviewer: str | None = None
    signed_in: bool = False
    page: Callable[[], None] | None = None


# -- the gate ----------------------------------------------------------------------------------------


def gate() -> str:
    """The reviewer of this run; for anyone not allowed in, show the sign-in or refusal page and stop."""
    admission = admit()
    if admission.reviewer is None:
        st.session_state.pop(REVIEWER_KEY, None)
        assert admission.page is not None
        # A hidden navigation of this one page replaces the app's (and Streamlit's pages/ folder listing), so
        # not even the pages' names show; it answers the URL asked for too (a bookmark of /activity, say),
        # where an unknown page would put Streamlit's "page not found" dialog over it.
        pages = [st.Page(admission.page, title="Sign in", url_path="sign-in", default=True)]
        if (asked := _asked_page()) and asked != "sign-in":
            pages.append(st.Page(admission.page, title="Sign in", url_path=asked))
        st.navigation(pages, position="hidden").run()
        st.stop()
    st.session_state[REVIEWER_KEY] = admission.reviewer
    if admission.signed_in:
        with st.sidebar:
            st.caption(f"Signed in as **{admission.reviewer}**")
            st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=st.logout)
    return admission.reviewer


def admit() -> Admission:
    """Decide, from Streamlit's secrets, the signed-in user (st.user) and `percept_reviewers`."""
    try:
        auth = auth_section()
    except SecretsUnreadable as exc:
        _log.error("Sign-in refused everyone: Streamlit's secrets cannot be read: %s", exc)
        return Admission(page=_secrets_unreadable_page)
    if auth is None:
        return Admission(reviewer=_local_reviewer())

    providers = sign_in_providers(auth)
    problem = configuration_problem(auth, providers)
    if problem:
        _log.error("Sign-in is misconfigured: %s", problem)
        return Admission(page=lambda: _misconfigured_page(problem))
    if not st.user.get("is_logged_in"):
        return Admission(page=lambda: _sign_in_page(providers))

    email = _email_of(st.user.to_dict())
    if email is None:
        _log.warning("Sign-in refused: the identity token carries no usable e-mail")
        return Admission(page=_no_email_page)
    try:
        allowed = Settings.load().reviewers
    except ConfigError as exc:
        # Nobody's e-mail can be checked against a list that cannot be read. The reason names settings
        # and hosts, which a visitor who may not be a reviewer has no business seeing: the log has it.
        _log.error("Sign-in refused %s: the settings cannot be read: %s", email, exc)
        return Admission(page=lambda: _settings_unreadable_page(email))
    if not allowed:
        _log.warning("Sign-in refused %s: percept_reviewers is empty", email)
        return Admission(page=lambda: _no_reviewers_page(email))
    if email not in allowed:
        _log.warning("Sign-in refused %s: not in percept_reviewers", email)
        return Admission(page=lambda: _not_allowed_page(email))
    return Admission(reviewer=email, signed_in=True)


# -- reading the configuration -----------------------------------------------------------------------


class SecretsUnreadable(Exception):
    """Streamlit's secrets exist but cannot be read: whether sign-in is required is unknown."""


def sign_in_required() -> bool:
    """True when Streamlit's secrets have an `[auth]` table, or cannot be read (the gate then refuses)."""
    try:
        return auth_section() is not None
    except SecretsUnreadable:
        return True


def auth_section() -> Mapping[str, Any] | None:
    """The `[auth]` table of Streamlit's secrets, or None when there is none (local use)."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError as exc:  # Streamlit's StreamlitSecretNotFoundError
        if getattr(exc, "error_id", None) == _NO_SECRETS_FILE:
            return None
        raise SecretsUnreadable(str(exc)) from None
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise SecretsUnreadable("`auth` in Streamlit's secrets is not a table ([auth]).")
    return section


def sign_in_providers(auth: Mapping[str, Any]) -> list[str | None]:
    """The providers to offer: None for the one written in `[auth]` itself, then each `[auth.<name>]`."""
    providers: list[str | None] = []
    if any(key in auth for key in _PROVIDER_KEYS):
        providers.append(None)
    providers += [
        name
        for name, value in auth.items()
        if isinstance(value, Mapping) and any(key in value for key in _PROVIDER_KEYS)
    ]
    return providers


def configuration_problem(auth: Mapping[str, Any], providers: list[str | None]) -> str | None:
    """What `[auth]` lacks for st.login to work, or None (names keys only, never values)."""
    missing = [f"auth.{key}" for key in _SHARED_KEYS if not auth.get(key)]
    if not providers:
        missing += [f"auth.{key}" for key in _PROVIDER_KEYS]
    for provider in providers:
        section = auth if provider is None else auth[provider]
        prefix = "auth." if provider is None else f"auth.{provider}."
        missing += [prefix + key for key in _PROVIDER_KEYS if not section.get(key)]
    redirect = str(auth.get("redirect_uri") or "")
    if redirect and not redirect.rstrip("/").endswith("/oauth2callback"):
        return "auth.redirect_uri must be the app's own URL ending in /oauth2callback."
    if missing:
        return f"Streamlit's secrets lack {', '.join(missing)}."
    for provider in providers:
        section = auth if provider is None else auth[provider]
        if _any_entra_tenant(str(section.get("server_metadata_url"))):
            key = "auth.server_metadata_url" if provider is None else f"auth.{provider}.server_metadata_url"
            return (
                f"{key} must name your Microsoft Entra tenant (https://login.microsoftonline.com/<tenant id>/v2.0/"
                ".well-known/openid-configuration): through common, organizations or consumers, an account of "
                "any tenant could present a reviewer's e-mail."
            )
    return None


def _any_entra_tenant(url: str) -> bool:
    """True for Entra ID's multi-tenant endpoints, where the e-mail claim is not the tenant's to vouch for."""
    parts = urlsplit(url)
    tenant = parts.path.strip("/").partition("/")[0].lower()
    return (parts.hostname or "").lower() in _ENTRA_HOSTS and tenant in _ENTRA_SHARED_TENANTS


def _email_of(claims: Mapping[str, Any]) -> str | None:
    """The token's e-mail, normalised as percept_reviewers is; None when absent or marked unverified."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        return None
    verified = claims.get("email_verified")
    if verified is False or str(verified).lower() == "false":
        return None
    return email.strip().lower()


def _asked_page() -> str | None:
    """The page the browser asked for (the URL's last path segment), when it looks like a page's."""
    segment = urlsplit(st.context.url or "").path.rstrip("/").rpartition("/")[2]
    return segment if re.fullmatch(r"[A-Za-z0-9_-]+", segment) else None


def _local_reviewer() -> str:
    """Without [auth]: an identity Streamlit vouches for (a hosted platform, AppTest), else the OS user."""
    user = st.user
    email = user.get("email") if user.get("is_logged_in") else None
    return str(email) if email else default_actor()


# -- the pages a visitor who is not let in gets ----------------------------------------------------------


def _header() -> None:
    st.title("Percept Curator")


def _sign_in_page(providers: list[str | None]) -> None:
    _header()
    st.markdown("Reviewers sign in with their organisation account to review and push retraining images.")
    for provider in providers:
        label = "Sign in" if provider is None else f"Sign in with {provider.capitalize()}"
        st.button(
            label,
            key=f"sign_in:{provider or ''}",
            type="primary",
            icon=":material/login:",
            on_click=st.login,
            args=() if provider is None else (provider,),
        )


def _refusal(message: str, *, signed_in: bool = True) -> None:
    _header()
    st.error(message, icon=":material/block:")
    if signed_in:
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=st.logout)


def _not_allowed_page(email: str) -> None:
    _refusal(
        f"**{email} is not allowed to use this app.**  \n"
        "Only the reviewers an administrator lists may use it. Ask for your e-mail to be added, or sign out "
        "and sign in with another account."
    )


def _no_reviewers_page(email: str) -> None:
    _refusal(
        f"**No one is allowed to use this app yet.** You are signed in as {email}, but the list of "
        "reviewers is empty.  \nAn administrator lists the reviewers' e-mails in the setting `percept_reviewers` "
        '(for example `percept_reviewers = "ana@contoso.com, raj@contoso.com"` in `.streamlit/secrets.toml`, '
        "or the environment) and restarts the app."
    )


def _no_email_page() -> None:
    _refusal(
        "**Your sign-in did not say which e-mail address is yours**, so this app cannot tell whether you are "
        "a reviewer.  \nAn administrator adds the `email` claim to the ID token (Microsoft Entra ID: the app "
        "registration's Token configuration, optional claim `email`)."
    )


def _settings_unreadable_page(email: str) -> None:
    _refusal(
        f"**The app cannot check who may use it.** You are signed in as {email}, but the app's settings "
        "cannot be read, so no one is let in.  \nAn administrator finds the reason in the app's log."
    )


def _misconfigured_page(problem: str) -> None:
    _refusal(f"**Sign-in is not set up completely.** {problem}  \nNo one can sign in until it is.", signed_in=False)


def _secrets_unreadable_page() -> None:
    _refusal(
        "**Streamlit's secrets cannot be read**, so this app cannot tell whether sign-in is required and "
        "lets no one in.  \nAn administrator finds the reason (a file and a line) in the app's log.",
        signed_in=False,
    )
