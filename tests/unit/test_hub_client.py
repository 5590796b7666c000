"""registry.hub: endpoint handling and the conversion of huggingface_hub errors into ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.errors import (
    HubAuthError,
    HubConflictError,
    HubEntryNotFoundError,
    HubError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    HubUnavailableError,
    RegistryError,
)
from registry.hub import HubClient, default_endpoint, is_public_hub
from registry.hub_errors import convert_error

ENDPOINT = "http://127.0.0.1:9"


def _client_error(
    status: int, headers: dict[str, str] | None = None, url: str = f"{ENDPOINT}/api/models/a/b"
) -> Exception:
    """The exception huggingface_hub itself raises for this response (its real mapping code)."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    response = httpx2.Response(
        status, headers=headers or {}, json={"error": "server says no"}, request=httpx2.Request("GET", url)
    )
    with pytest.raises(Exception) as exc:
        hf_raise_for_status(response)
    return exc.value


@pytest.mark.parametrize(
    ("status", "headers", "expected", "fragment"),
    [
        (404, {"X-Error-Code": "RepoNotFound"}, HubRepoNotFoundError, "repository a/b not found"),
        (404, {"X-Error-Code": "RevisionNotFound"}, HubRevisionNotFoundError, "revision 'v9' not found"),
        (404, {"X-Error-Code": "EntryNotFound"}, HubEntryNotFoundError, "'config.json' does not exist"),
        (
            401,
            {"X-Error-Message": "Invalid credentials in Authorization header"},
            HubAuthError,
            "invalid or missing token",
        ),
        (403, {}, HubAuthError, "registry hub token create"),
        (412, {"X-Error-Message": "Parent commit abc is not the head"}, HubConflictError, "Parent commit abc"),
        (409, {}, HubConflictError, "re-read and retry"),
        (500, {}, HubError, "HTTP 500"),
    ],
)
def test_convert_error_maps_client_errors(status: int, headers: dict[str, str], expected: type, fragment: str) -> None:
    exc = _client_error(status, headers)
    converted = convert_error(exc, what="download", endpoint=ENDPOINT, repo_id="a/b", revision="v9", path="config.json")
    assert type(converted) is expected
    assert isinstance(converted, RegistryError) and isinstance(converted, OSError)
    assert fragment in str(converted)
    assert converted.repo_id == "a/b" and converted.status == status and converted.endpoint == ENDPOINT


def test_convert_error_maps_unreachable_hubs_and_passes_others_through() -> None:
    import httpx2

    down = convert_error(httpx2.ConnectError("refused"), what="list models", endpoint=ENDPOINT)
    assert isinstance(down, HubUnavailableError) and "registry hub serve" in str(down) and ENDPOINT in str(down)
    assert convert_error(KeyError("x"), what="x", endpoint=ENDPOINT) is None


def test_unreachable_hub_raises_our_error() -> None:
    client = HubClient(endpoint=ENDPOINT, token="hf_x")
    with pytest.raises(HubUnavailableError):
        client.head_sha("a/b")


@pytest.mark.parametrize(
    ("endpoint", "public"),
    [
        ("https://huggingface.co", True),
        ("https://hf.co/", True),
        ("https://hub-ci.huggingface.co", True),
        ("http://127.0.0.1:7860", False),
        ("https://huggingface.co.evil.example", False),
        ("http://localhost:8000", False),
    ],
)
def test_is_public_hub(endpoint: str, public: bool) -> None:
    assert is_public_hub(endpoint) is public


def test_default_endpoint_reads_hf_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:5/")
    assert default_endpoint() == "http://127.0.0.1:5"
    assert HubClient(token="hf_x").endpoint == "http://127.0.0.1:5"
    monkeypatch.delenv("HF_ENDPOINT")
    assert default_endpoint() == "https://huggingface.co"


def test_embedded_endpoints_say_xet_is_off_without_changing_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    client = HubClient(endpoint=ENDPOINT, token="hf_x")
    assert constants.HF_HUB_DISABLE_XET is False  # only set while uploading (registry.hub_transport.xet_off)
    assert client.api.headers == {"X-Mergeling-Xet": "disabled"}
    assert HubClient(endpoint="https://huggingface.co", token="hf_x").api.headers == {}


def test_whoami_without_any_token_is_an_auth_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no stored login
    with pytest.raises(HubAuthError) as exc:
        HubClient(endpoint=ENDPOINT).whoami()
    assert (
        "no token" in str(exc.value) and "HF_TOKEN" in str(exc.value) and "registry hub token create" in str(exc.value)
    )


def test_a_malformed_repo_id_is_our_error_before_any_request() -> None:
    from registry.errors import HubBadRequestError

    with pytest.raises(HubBadRequestError) as exc:
        HubClient(endpoint=ENDPOINT, token="hf_x").head_sha("../x")  # nothing listens there: no request made
    assert isinstance(exc.value, ValueError) and "'../x'" in str(exc.value) and exc.value.repo_id == "../x"
