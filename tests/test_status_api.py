"""GET /api/recordings/{callId}/{operationId} and GET /api/recordings?callId= against Azurite.

The read URL is proven by downloading the recording with plain httpx.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.ledger import OperationLedger, OperationStatus
from shared.settings import get_settings
from tests.support.functions import http_request, invoke, json_body
from tests.support.recordings import put_recording
from tests.support.recordings import recording_status as status

S = OperationStatus
CALL = "57dab8b1-894c-409a-b240-bd8beae78896"
OPERATION = "0fe0623f-d628-42ed-b4bd-8ac290072cc5"


async def store(
    storage: Any, call_id: str, operation_id: str, data: bytes, expires_at: datetime
) -> str:
    """Upload a recording with the worker's conventions and move its row to stored."""
    name = await put_recording(storage, call_id, operation_id, expires_at, data)
    ledger = OperationLedger(storage.table)
    await ledger.advance(call_id, operation_id, S.REQUESTED, ClientContext="ctx-1")
    await ledger.advance(call_id, operation_id, S.COMPLETED, ResultCode=200, ResultSubcode=8515)
    await ledger.advance(
        call_id,
        operation_id,
        S.STORED,
        BlobName=name,
        SizeBytes=len(data),
        Sha256=hashlib.sha256(data).hexdigest(),
        ExpiresAt=expires_at,
    )
    return name


async def test_stored_recording_has_a_read_url_that_downloads_it(storage: Any) -> None:
    data = b"RIFF" + os.urandom(64 * 1024)
    await store(storage, CALL, OPERATION, data, datetime.now(UTC) + timedelta(minutes=60))

    # The id in another of Graph's spellings finds the same row.
    response = await status(CALL.replace("-", "").upper(), OPERATION)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json_body(response)
    assert body["callId"] == CALL
    assert body["operationId"] == OPERATION
    assert body["status"] == "stored"
    assert body["clientContext"] == "ctx-1"
    assert body["resultSubcode"] == 8515
    assert body["sizeBytes"] == len(data)
    assert body["blobName"] == f"{CALL}/{OPERATION}.wav"
    async with httpx.AsyncClient(timeout=10) as client:
        download = await client.get(body["recordingUrl"])
        assert download.status_code == 200
        assert download.content == data
        # Read-only: the same URL cannot overwrite or delete the recording.
        overwrite = await client.put(
            body["recordingUrl"], content=b"x", headers={"x-ms-blob-type": "BlockBlob"}
        )
        assert overwrite.status_code == 403
        assert (await client.delete(body["recordingUrl"])).status_code == 403
    query = parse_qs(urlsplit(body["recordingUrl"]).query)
    assert query["sp"] == ["r"]
    url_expiry = datetime.fromisoformat(body["recordingUrlExpiresAt"])
    ttl = timedelta(minutes=get_settings().status_url_ttl_minutes)
    assert url_expiry <= datetime.now(UTC) + ttl
    assert url_expiry > datetime.now(UTC) + ttl - timedelta(minutes=1)


async def test_read_url_never_outlives_the_recording(storage: Any) -> None:
    expires_at = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
    await store(storage, CALL, OPERATION, b"RIFF-short", expires_at)
    body = json_body(await status(CALL, OPERATION))
    assert datetime.fromisoformat(body["recordingUrlExpiresAt"]) == expires_at


async def test_no_read_url_once_retention_has_passed(storage: Any) -> None:
    await store(storage, CALL, OPERATION, b"RIFF-old", datetime.now(UTC) - timedelta(seconds=1))
    body = json_body(await status(CALL, OPERATION))
    assert body["status"] == "stored"
    assert "recordingUrl" not in body


@pytest.mark.parametrize("status_now", [S.REQUESTED, S.RUNNING, S.COMPLETED, S.DOWNLOADING])
async def test_no_read_url_before_the_recording_is_stored(
    storage: Any, status_now: OperationStatus
) -> None:
    await OperationLedger(storage.table).advance(CALL, OPERATION, status_now)
    response = await status(CALL, OPERATION)
    assert response.status_code == 200
    body = json_body(response)
    assert body["status"] == status_now.value
    assert "recordingUrl" not in body


async def test_no_read_url_for_an_expired_recording(storage: Any) -> None:
    name = await store(storage, CALL, OPERATION, b"RIFF", datetime.now(UTC) + timedelta(hours=1))
    await OperationLedger(storage.table).advance(CALL, OPERATION, S.EXPIRED)
    body = json_body(await status(CALL, OPERATION))
    assert body["status"] == "expired"
    assert body["blobName"] == name
    assert "recordingUrl" not in body


async def test_unknown_operation_is_404_problem(storage: Any) -> None:
    await OperationLedger(storage.table).advance(CALL, OPERATION, S.RUNNING)
    response = await status(CALL, "7e1b3a52-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    assert problem["status"] == 404
    assert "7e1b3a52-0000-4000-8000-000000000000" in problem["detail"]


async def test_an_overlong_id_is_a_400_naming_the_field(storage: Any) -> None:
    response = await status(CALL, "x" * 300)
    assert response.status_code == 400
    problem = json_body(response)
    assert problem["field"] == "operationId"
    assert "operationId" in problem["detail"]


async def list_call(params: dict[str, str]) -> Any:
    return await invoke(
        "list_recordings",
        http_request("GET", "http://localhost/api/recordings", params=params),
    )


async def test_list_returns_the_operations_of_one_call(storage: Any) -> None:
    ledger = OperationLedger(storage.table)
    await ledger.advance(CALL, OPERATION, S.RUNNING)
    await ledger.advance(CALL, "op-second", S.FAILED, FailureReason="download failed")
    await ledger.advance("another-call", "op-other", S.RUNNING)
    assert await ledger.claim(CALL, "recording-started")  # claims are not operations

    response = await list_call({"callId": CALL.upper()})

    assert response.status_code == 200
    body = json_body(response)
    assert body["callId"] == CALL
    operations = {item["operationId"]: item for item in body["operations"]}
    assert set(operations) == {OPERATION, "op-second"}
    assert operations["op-second"]["failureReason"] == "download failed"
    assert all("recordingUrl" not in item for item in body["operations"])


async def test_list_of_an_unknown_call_is_empty(storage: Any) -> None:
    nobody = "0badca11-0000-4000-8000-000000000000"  # a well-formed id no call has
    body = json_body(await list_call({"callId": nobody}))
    assert body == {"callId": nobody, "operations": []}


async def test_list_of_a_call_id_that_is_not_a_graph_id_is_a_400(storage: Any) -> None:
    response = await list_call({"callId": "nobody"})
    assert response.status_code == 400
    assert json_body(response)["field"] == "callId"


async def test_list_with_an_empty_call_id_is_a_400_naming_it(storage: Any) -> None:
    # Issue 27: without callId the list across calls answers (tests/test_who_called.py); a
    # callId given but empty is still refused, naming it.
    response = await list_call({"callId": ""})
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    assert problem["field"] == "callId"
    assert "callId" in problem["detail"]


# --- identity-based storage: a user delegation SAS ----------------------------------------------


class BearerToken:
    """An async token credential handing out one JWT, as a managed identity would for Storage."""

    def __init__(self, token: str, expires_on: int) -> None:
        self._token = token
        self._expires_on = expires_on

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, self._expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> BearerToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A blob-only Azurite over HTTPS that accepts only bearer tokens (``--oauth basic``).

    Yields its account URL and the CA file that verifies it. It checks each token's audience,
    issuer and lifetime (not its signature), issues user delegation keys and verifies the SAS
    signed with them, which is what the app does with its managed identity in Azure.
    """
    import ipaddress
    import signal
    import socket
    import subprocess
    import time

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from devtools.azurite import azurite_executable, free_port

    folder = tmp_path_factory.mktemp("oauth-azurite")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    port = free_port()
    executable = azurite_executable().replace("/azurite", "/azurite-blob")
    process = subprocess.Popen(
        [
            executable,
            "--inMemoryPersistence",
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--oauth",
            "basic",
            "--cert",
            str(cert_file),
            "--key",
            str(key_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            assert process.poll() is None, "Azurite (oauth) exited"
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("Azurite (oauth) did not listen in time")
        yield f"https://127.0.0.1:{port}/devstoreaccount1", str(cert_file)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def storage_token(now: datetime) -> tuple[str, dict[str, Any]]:
    """A Storage access token for a managed identity (Azurite checks claims, not signatures)."""
    import jwt

    claims: dict[str, Any] = {
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "oid": "0b6b9c5e-5d2f-4a37-8d0a-3f3c1b2a9e11",
        "iat": int((now - timedelta(minutes=1)).timestamp()),
        "nbf": int((now - timedelta(minutes=1)).timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    return jwt.encode(claims, "azurite-checks-claims-not-signatures-0123456789", "HS256"), claims


async def delegation_read_url(
    oauth_azurite: tuple[str, str], data: bytes, now: datetime
) -> tuple[str, dict[str, Any]]:
    """Upload ``data`` with a bearer token and ask the app's code for a read URL to it."""
    from azure.storage.blob.aio import BlobServiceClient

    from shared.recording_access import read_url

    account_url, ca_file = oauth_azurite
    token, claims = storage_token(now)
    name = f"{CALL}/{OPERATION}-{os.urandom(4).hex()}.wav"
    async with BlobServiceClient(
        account_url, credential=BearerToken(token, claims["exp"]), connection_verify=ca_file
    ) as service:
        container = service.get_container_client("recordings")
        if not await container.exists():
            await container.create_container()
        await container.upload_blob(name, data)
        url = await read_url(service, "recordings", name, now=now, ttl=timedelta(minutes=5))
    assert url is not None
    return url.url, claims


async def test_identity_based_storage_signs_with_a_user_delegation_key(
    oauth_azurite: tuple[str, str],
) -> None:
    now = datetime.now(UTC)
    url, claims = await delegation_read_url(oauth_azurite, b"RIFF", now)
    query = parse_qs(urlsplit(url).query)
    # The key Azurite issued to this identity signed it (no account key exists on this client).
    assert query["skoid"] == [claims["oid"]]
    assert query["sktid"] == [claims["tid"]]
    assert query["spr"] == ["https"]
    assert query["sp"] == ["r"]
    assert query["sr"] == ["b"]
    assert datetime.fromisoformat(query["se"][0].replace("Z", "+00:00")) == (
        now + timedelta(minutes=5)
    ).replace(microsecond=0)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Azurite 3.35.0 checks a user delegation SAS against the string-to-sign of versions "
        "before 2026-10-06, while azure-storage-blob 12.31.1 signs with sv=2026-10-06 (two more "
        "fields); Azure itself accepts it. Strict: this starts failing when Azurite catches up."
    ),
)
async def test_user_delegation_read_url_downloads_the_recording(
    oauth_azurite: tuple[str, str],
) -> None:
    import ssl

    data = b"RIFF" + os.urandom(4096)
    url, _ = await delegation_read_url(oauth_azurite, data, datetime.now(UTC))
    context = ssl.create_default_context(cafile=oauth_azurite[1])
    async with httpx.AsyncClient(verify=context, timeout=10) as client:
        download = await client.get(url)
    assert download.status_code == 200
    assert download.content == data


async def test_storage_that_does_not_answer_is_a_503_problem_for_every_route(
    storage: Any, configure: Any, azurite: Any
) -> None:
    import re

    from devtools.azurite import free_port

    dead = re.sub(
        r"TableEndpoint=[^;]+",
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1",
        azurite.connection_string,
    )
    configure(AzureWebJobsStorage=dead)
    call_id, operation_id = "0badca11-0000-4000-8000-000000000001", CALL
    responses = [
        await status(call_id, operation_id),
        await list_call({"callId": call_id}),
        await invoke(
            "erase_recording",
            http_request(
                "DELETE",
                f"http://localhost/api/recordings/{call_id}/{operation_id}",
                route_params={"callId": call_id, "operationId": operation_id},
            ),
        ),
    ]
    for response in responses:
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.headers.get("Retry-After") == "5"
