"""An Entra ID tenant and a complete `[auth]` section for tests of the sign-in gate (no real tenant is asked)."""

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"  # the Directory (tenant) id the metadata URL names
AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a cookie secret of thirty-two characters",
    "client_id": "percept-curator",
    "client_secret": "a client secret",
    "server_metadata_url": f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration",
}
