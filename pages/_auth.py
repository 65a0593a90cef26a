"""The sign-in gate every run of the app passes before any page, and every action before it acts.

Local use: no `[auth]` in Streamlit's secrets, no `percept_reviewers`, and the app bound to a loopback address
(`server.address`: 127.0.0.1 in .streamlit/config.toml). Whoever uses it is on this machine, and the reviewer is
the OS user, as the CLI records it. Anything else is a shared deployment: it configures `[auth]` (Microsoft
Entra ID through Streamlit's OpenID Connect: `st.login`, `st.user`, `st.logout`) and lists its reviewers in
`percept_reviewers`, and only a signed-in user the list names (`Reviewers`) gets further than this module. An
app reachable from other machines, or with reviewers listed, but without a complete `[auth]` (a secrets file not
found, not mounted, the app started from another folder) lets no one in and says which keys to add.

Everyone not let in gets one page from here and the run stops: no navigation, no sidebar, no settings, no blob
names, no thumbnails. Whatever cannot be decided (secrets that do not parse, settings that do not load, an empty
list, a token without a tenant) refuses: the gate fails closed. Dialogs, fragments and widget callbacks run
without app.py, so each of them asks again before it reads or writes anything (`require_reviewer`,
`allowed_now`), reading `percept_reviewers` afresh: someone taken off the list loses every action at their next
click, in an open dialog too, without a restart.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import streamlit as st
from streamlit.logger import get_logger

from pages._text import md
from percept_core import ConfigError, Settings
from percept_core.config import is_loopback_host, read_setting
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
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_log = get_logger("percept_curator.auth")  # the server log, in Streamlit's format

# What the gate relies on in the ID token (Microsoft identity platform: "ID token claims reference" and "Optional
# claims reference"; OpenID Connect Core 1.0, section 5.1):
# - `oid`: the immutable identifier of the user object, the same for every app of the tenant, never reassigned;
#   with `tid`, the GUID of the tenant the user signed in to, it names one account for good. A reviewer is best
#   listed by it.
# - `email`: an optional claim that is mutable and that Entra ID does not verify (an administrator, and for some
#   account types the user, can set it to any address), so it proves nothing by itself: listed e-mails alone let
#   an account of another tenant, or a renamed one, in ("nOAuth").
# - `xms_edov` ("email domain owner verified", an optional claim, sent only with `email`): true when the
#   e-mail's domain is a verified domain of the user's tenant (or the address comes from a Microsoft account,
#   Google or e-mail one-time-passcode sign-in). An e-mail entry admits an Entra ID user only with it true.
# - Another OpenID Connect provider: the standard claim `email_verified`, true when the provider verified the
#   address. An e-mail entry admits that provider's user only with it true.
# The token's signature, audience and issuer are checked by Streamlit's OIDC client (Authlib) against the
# provider's metadata before any of this runs.


@dataclass(frozen=True)
class Admission:
    """What the gate decided for this run: a reviewer to record, or the one page this visitor gets."""

    reviewer: str | None = None
    signed_in: bool = False
    page: Callable[[], None] | None = None


# -- the gate ----------------------------------------------------------------------------------------


def gate(settings: Settings | ConfigError | None = None) -> str:
    """The reviewer of this run; for anyone not allowed in, show the sign-in or refusal page and stop.
    `settings` is the run's reading of them (`Settings.load()`'s result or its error), read here when not given."""
    admission = admit(settings)
    if admission.reviewer is None:
        _show_only(admission)
    st.session_state[REVIEWER_KEY] = admission.reviewer
    if admission.signed_in:
        with st.sidebar:
            st.caption(f"Signed in as **{md(admission.reviewer)}**")
            st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=st.logout)
    return admission.reviewer


def require_reviewer() -> str:
    """The reviewer at this moment, for a dialog, a fragment or an action of a page: someone no longer allowed
    gets the refusal page instead (a run of the whole app, which the gate stops), and the action does not run.
    Not for widget callbacks, where a rerun cannot be asked for: they use `allowed_now`."""
    admission = admit()
    if admission.reviewer is None or admission.reviewer != st.session_state.get(REVIEWER_KEY, admission.reviewer):
        st.session_state.pop(REVIEWER_KEY, None)
        st.rerun(scope="app")
    return admission.reviewer


def allowed_now() -> bool:
    """For a widget callback, before it reads or writes anything: is this session's reviewer still let in?
    When not, the callback does nothing; the run that follows shows the refusal page (app.py's gate)."""
    admission = admit()
    allowed = admission.reviewer is not None and admission.reviewer == st.session_state.get(REVIEWER_KEY)
    if not allowed:
        st.session_state.pop(REVIEWER_KEY, None)
    return allowed


def guarded(action: Callable[..., Any]) -> Callable[..., None]:
    """A widget callback that acts only while the session's reviewer is still let in (see `allowed_now`)."""

    def callback(*args: Any, **kwargs: Any) -> None:
        if allowed_now():
            action(*args, **kwargs)

    return callback


def _show_only(admission: Admission) -> None:
    st.session_state.pop(REVIEWER_KEY, None)
    assert admission.page is not None
    # A hidden navigation of this one page replaces the app's (and Streamlit's pages/ folder listing), so not
    # even the pages' names show; it answers the URL asked for too (a bookmark of /activity, say), where an
    # unknown page would put Streamlit's "page not found" dialog over it.
    pages = [st.Page(admission.page, title="Sign in", url_path="sign-in", default=True)]
    if (asked := _asked_page()) and asked != "sign-in":
        pages.append(st.Page(admission.page, title="Sign in", url_path=asked))
    st.navigation(pages, position="hidden").run()
    st.stop()


def admit(settings: Settings | ConfigError | None = None) -> Admission:
    """Decide, from Streamlit's secrets, the bind address, the signed-in user (st.user) and `percept_reviewers`.
    `settings` as for `gate`; `percept_reviewers` itself is read afresh whatever the run read."""
    try:
        auth = auth_section()
    except SecretsUnreadable as exc:
        _log.error("Sign-in refused everyone: Streamlit's secrets cannot be read: %s", exc)
        return Admission(page=_secrets_unreadable_page)
    if auth is None:
        return _without_sign_in()

    providers = sign_in_providers(auth)
    problem = configuration_problem(auth, providers)
    if problem:
        _log.error("Sign-in is misconfigured: %s", problem)
        return Admission(page=lambda: _misconfigured_page(problem))
    if not st.user.get("is_logged_in"):
        return Admission(page=lambda: _sign_in_page(providers))

    claims = st.user.to_dict()
    shown = _shown_name(claims)
    try:
        if isinstance(settings, ConfigError):
            raise settings
        if settings is None:
            Settings.load()
        reviewers = Reviewers.parse(current_reviewers())
    except ConfigError as exc:
        # Nobody can be checked against a list that cannot be read. The reason names settings and hosts, which
        # a visitor who may not be a reviewer has no business seeing: the log has it.
        _log.error("Sign-in refused %s: the settings cannot be read: %s", shown, exc)
        return Admission(page=lambda: _settings_unreadable_page(shown))
    metadata_url = _provider_metadata_url(auth, claims.get("provider"))
    if metadata_url is None:
        _log.warning("Sign-in refused %s: signed in through a provider [auth] does not list", shown)
        return Admission(page=lambda: _wrong_tenant_page(shown))
    if wrong := tenant_problem(claims, metadata_url):
        _log.warning("Sign-in refused %s: %s", shown, wrong)
        return Admission(page=lambda: _wrong_tenant_page(shown))
    if not reviewers:
        _log.warning("Sign-in refused %s: percept_reviewers is empty", shown)
        return Admission(page=lambda: _no_reviewers_page(shown))
    return reviewers.admit(claims, entra=_is_entra(metadata_url))


def _without_sign_in() -> Admission:
    """No [auth]: local use only on a loopback bind with no reviewers listed; anything else refuses everyone."""
    address = st.get_option("server.address") or ""
    reachable = not is_loopback_host(address)
    try:
        listed = bool(current_reviewers())
    except ConfigError as exc:
        _log.error("Sign-in refused everyone: whether percept_reviewers is set cannot be read: %s", exc)
        return Admission(page=_settings_unreadable_local_page)
    if not reachable and not listed:
        return Admission(reviewer=_local_reviewer())
    why = []
    if reachable:
        why.append(f"server.address is {address or 'unset (every interface)'}")
    if listed:
        why.append("percept_reviewers is set")
    _log.error(
        "Sign-in refused everyone: %s, and Streamlit's secrets have no [auth] (secrets files: %s)",
        " and ".join(why),
        ", ".join(str(p) for p in _secrets_file_options()) or "none",
    )
    return Admission(page=lambda: _sign_in_required_page(reachable=reachable, listed=listed))


# -- who is a reviewer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reviewers:
    """`percept_reviewers`, read: accounts by object id, and e-mails.

    An entry is one of
    - `<object id>`: the `oid` of an account of the configured tenant (Entra ID: the tenant in
      `auth.server_metadata_url`, which the token's `tid` must be; another provider: its `oid` claim);
    - `<tenant id>/<object id>`: the `oid` of an account of that tenant (the token's `tid` must be it);
    - an e-mail: admits only a token that proves the address (`xms_edov` from Entra ID, `email_verified`
      from another provider), matched case-insensitively and exactly.
    Entries are separated by commas, semicolons or spaces; anything else is ignored, and logged.
    """

    accounts: frozenset[tuple[str | None, str]] = frozenset()
    emails: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Reviewers:
        accounts: set[tuple[str | None, str]] = set()
        emails: set[str] = set()
        for entry in entries:
            tenant, _, oid = entry.strip().lower().rpartition("/")
            if _GUID.fullmatch(oid) and (not tenant or _GUID.fullmatch(tenant)):
                accounts.add((tenant or None, oid))
            elif "@" in entry and "/" not in entry:
                emails.add(entry.strip().lower())
            else:
                _log.warning("percept_reviewers: %r is neither an object id, tenant id/object id nor an e-mail", entry)
        return cls(frozenset(accounts), frozenset(emails))

    def __bool__(self) -> bool:
        return bool(self.accounts or self.emails)

    def admit(self, claims: Mapping[str, Any], *, entra: bool) -> Admission:
        """Let in the account the token names (its tenant already checked), or say why not."""
        oid, tid = _guid(claims.get("oid")), _guid(claims.get("tid"))
        email = _email_of(claims)
        proven = email is not None and _email_proven(claims, entra=entra)
        account = f"{tid}/{oid}" if tid and oid else oid
        if oid and ((None, oid) in self.accounts or (tid, oid) in self.accounts):
            return Admission(reviewer=email if proven else account, signed_in=True)
        if email is not None and email in self.emails:
            if proven:
                return Admission(reviewer=email, signed_in=True)
            _log.warning("Sign-in refused %s: listed by e-mail, but the token does not prove the e-mail", email)
            return Admission(page=lambda: _unproven_email_page(email, entra=entra))
        shown = _shown_name(claims)
        if email is None and oid is None:
            _log.warning("Sign-in refused: the identity token carries neither an e-mail nor an object id (oid)")
            return Admission(page=_no_email_page)
        _log.warning("Sign-in refused %s: not in percept_reviewers", shown)
        return Admission(page=lambda: _not_allowed_page(shown))


def current_reviewers() -> tuple[str, ...]:
    """`percept_reviewers` as its sources say now, read afresh on every call: a change needs no restart.

    The sources and their order are Settings.load's (environment, .env, local.settings.json, Streamlit
    secrets); Streamlit keeps the secrets it read at start, so the secrets files are read again here.
    """
    return read_setting("reviewers", environ=_environment_without_promoted_secrets(), secrets=_fresh_secrets()) or ()


def _environment_without_promoted_secrets() -> Mapping[str, str]:
    """The process environment without what Streamlit copied into it from its secrets.

    Streamlit puts every top-level string or number of the secrets it read into os.environ (and takes it out
    again only when it reads them anew), so there `percept_reviewers` as it was at start would shadow the file
    as it is now: someone taken off the list would keep acting. A value the environment holds that differs
    from the secrets' was set by whoever started the app, and still wins."""
    try:
        promoted = {
            key: str(value)
            for key, value in st.secrets.to_dict().items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        }
    except FileNotFoundError:
        promoted = {}
    return {key: value for key, value in os.environ.items() if promoted.get(key) != value}


def _fresh_secrets() -> Mapping[str, Any]:
    files = [p for p in _secrets_file_options() if p.is_file()]
    if not files or st.get_option("global.appTest"):  # AppTest's secrets, or a host's, live in st.secrets only
        try:
            return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, dict)}
        except FileNotFoundError:
            return {}
    merged: dict[str, Any] = {}
    for path in files:  # later files win, as in Streamlit
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}.") from None
    return {k: v for k, v in merged.items() if not isinstance(v, dict)}


def _secrets_file_options() -> list[Path]:
    try:
        return [Path(str(f)).expanduser() for f in st.get_option("secrets.files") or ()]
    except Exception:  # an option Streamlit does not know: no files
        return []


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
                "any tenant could sign in."
            )
    return None


def _any_entra_tenant(url: str) -> bool:
    """True for Entra ID's multi-tenant endpoints, where no one tenant vouches for the accounts."""
    return _is_entra(url) and (_configured_tenant(url) or "") in _ENTRA_SHARED_TENANTS


def _is_entra(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in _ENTRA_HOSTS


def _configured_tenant(url: str) -> str | None:
    """The tenant an Entra ID metadata URL names (a GUID, a domain, or `common`...), lowered."""
    return urlsplit(url).path.strip("/").partition("/")[0].lower() or None


def _provider_metadata_url(auth: Mapping[str, Any], provider: object) -> str | None:
    """The metadata URL of the provider the user signed in through (Streamlit puts its name in st.user)."""
    providers = sign_in_providers(auth)
    if provider in (None, "", "default") and None in providers:
        return str(auth.get("server_metadata_url"))
    if isinstance(provider, str) and provider in providers:
        return str(auth[provider].get("server_metadata_url"))
    if provider is None and len(providers) == 1:
        section = auth if providers[0] is None else auth[providers[0]]
        return str(section.get("server_metadata_url"))
    return None


def tenant_problem(claims: Mapping[str, Any], metadata_url: str) -> str | None:
    """Why the token is not of the configured Entra ID tenant (None when it is, or the provider is not Entra ID).

    A tenant named by its id: the token's `tid` must be that id. A tenant named by a domain: the token's `tid`
    must be the tenant id in its `iss`, which Streamlit's OIDC client (Authlib) checked against the issuer in
    that tenant's own metadata (`https://login.microsoftonline.com/<tenant id>/v2.0`).
    """
    if not _is_entra(metadata_url):
        return None
    tid = _guid(claims.get("tid"))
    if tid is None:
        return "the identity token carries no tenant id (tid)"
    tenant = _configured_tenant(metadata_url)
    if tenant and _GUID.fullmatch(tenant):
        return None if tid == tenant else "the token's tenant (tid) is not the tenant of auth.server_metadata_url"
    issuer_tenant = _guid(urlsplit(str(claims.get("iss") or "")).path.strip("/").partition("/")[0])
    return None if issuer_tenant == tid else "the token's tenant (tid) is not the tenant of its issuer (iss)"


def _guid(value: object) -> str | None:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    return text if _GUID.fullmatch(text) else None


def _true(value: object) -> bool:
    return value is True or (isinstance(value, str | int) and str(value).strip().lower() in ("true", "1"))


def _email_of(claims: Mapping[str, Any]) -> str | None:
    """The token's e-mail, normalised as percept_reviewers is; None when absent."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        return None
    return email.strip().lower()


def _email_proven(claims: Mapping[str, Any], *, entra: bool) -> bool:
    """The token proves the e-mail is the user's: Entra ID's `xms_edov`, another provider's `email_verified`."""
    return _true(claims.get("xms_edov")) if entra else _true(claims.get("email_verified"))


def _shown_name(claims: Mapping[str, Any]) -> str:
    """What a refusal page calls the person: the e-mail in their token, else their account's id."""
    if email := _email_of(claims):
        return email
    oid, tid = _guid(claims.get("oid")), _guid(claims.get("tid"))
    if oid:
        return f"{tid}/{oid}" if tid else oid
    return str(claims.get("sub") or "this account")


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

_AUTH_KEYS = ", ".join(f"`auth.{key}`" for key in (*_SHARED_KEYS, *_PROVIDER_KEYS))


def _header() -> None:
    st.title("Percept Curator")


def _sign_in_page(providers: list[str | None]) -> None:
    _header()
    st.markdown("Reviewers sign in with their organisation account to review and push retraining images.")
    for provider in providers:
        label = "Sign in" if provider is None else f"Sign in with {md(provider.capitalize())}"
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


def _not_allowed_page(name: str) -> None:
    _refusal(
        f"**{md(name)} is not allowed to use this app.**  \n"
        "Only the reviewers an administrator lists may use it. Ask for your account to be added, or sign out "
        "and sign in with another account."
    )


def _no_reviewers_page(name: str) -> None:
    _refusal(
        f"**No one is allowed to use this app yet.** You are signed in as {md(name)}, but the list of "
        "reviewers is empty.  \nAn administrator lists the reviewers in the setting `percept_reviewers`: each "
        "account's object id (`oid`), or `<tenant id>/<object id>`, or a verified e-mail (for example "
        '`percept_reviewers = "<object id>, raj@contoso.com"` in `.streamlit/secrets.toml`, or the environment).'
    )


def _no_email_page() -> None:
    _refusal(
        "**Your sign-in did not say which e-mail address is yours**, nor which account it is (no `oid`), so this "
        "app cannot tell whether you are a reviewer.  \nAn administrator lists reviewers by their object id and "
        "makes sure the ID token carries `oid` and `tid` (Microsoft Entra ID always sends them), or adds the "
        "`email` claim (Microsoft Entra ID: the app registration's Token configuration, optional claim `email`)."
    )


def _unproven_email_page(email: str, *, entra: bool) -> None:
    proof = (
        "the optional claim `xms_edov` (the app registration's Token configuration), which Microsoft Entra ID "
        "sends true only for an e-mail of a domain your tenant has verified"
        if entra
        else "a provider that marks verified e-mails (`email_verified`)"
    )
    _refusal(
        f"**Your sign-in did not prove that {md(email)} is yours**, so the list of reviewers cannot let you in by "
        f"that e-mail: anyone can be given an unverified address.  \nAn administrator lists your account's object "
        f"id (`oid`) in `percept_reviewers` instead, or turns on {proof}."
    )


def _wrong_tenant_page(name: str) -> None:
    _refusal(
        f"**{md(name)} is not an account of this app's organisation.** The app lets in accounts of the one "
        "Microsoft Entra tenant named in its sign-in settings, and your sign-in came from another tenant, or did "
        "not say which (`tid`).  \nSign out and sign in with your organisation account."
    )


def _settings_unreadable_page(name: str) -> None:
    _refusal(
        f"**The app cannot check who may use it.** You are signed in as {md(name)}, but the app's settings "
        "cannot be read, so no one is let in.  \nAn administrator finds the reason in the app's log."
    )


def _settings_unreadable_local_page() -> None:
    _refusal(
        "**The app cannot tell whether sign-in is required**: its settings (`percept_reviewers`) cannot be read, "
        "so it lets no one in.  \nAn administrator finds the reason (a file) in the app's log.",
        signed_in=False,
    )


def _sign_in_required_page(*, reachable: bool, listed: bool) -> None:
    why = []
    if reachable:
        why.append("it is reachable from other machines (`server.address` is not a loopback address)")
    if listed:
        why.append("reviewers are listed (`percept_reviewers`)")
    _refusal(
        f"**Sign-in is required, and it is not set up.** The app lets no one in: {' and '.join(why)}, but "
        f"Streamlit's secrets have no `[auth]` table (or no secrets file was found).  \nAn administrator adds "
        f"{_AUTH_KEYS} to `.streamlit/secrets.toml` (in the folder the app is started from, or a file passed "
        "with `--secrets.files`) and lists the reviewers in `percept_reviewers`; or, for use on this machine "
        'only, binds the app to `server.address = "127.0.0.1"` and lists no reviewers.',
        signed_in=False,
    )


def _misconfigured_page(problem: str) -> None:
    _refusal(f"**Sign-in is not set up completely.** {problem}  \nNo one can sign in until it is.", signed_in=False)


def _secrets_unreadable_page() -> None:
    _refusal(
        "**Streamlit's secrets cannot be read**, so this app cannot tell whether sign-in is required and "
        "lets no one in.  \nAn administrator finds the reason (a file and a line) in the app's log.",
        signed_in=False,
    )
