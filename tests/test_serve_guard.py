"""``f5app.serving.guard``: who may call a server on this machine (the speech server and the studio).

Each test sends the request a browser would send (a page on another site, a rebinding host name,
a form post) through a small FastAPI app behind the guard, in process, and reads the answer.
The same requests against the real speech server are in ``tests/test_serve_security.py``.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from f5app.config import ServerConfig
from f5app.serving.guard import FORM, GuardPolicy, install_guard, split_authority

PORT = 8000
ATTACKER = "http://attacker.example"


def guarded(policy: GuardPolicy) -> TestClient:
    app = FastAPI()

    @app.get("/v1/voices")
    async def listing() -> dict:
        return {"data": []}

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> dict:
        return {"got": len(await request.body())}

    @app.post("/v1/voices")
    async def upload(request: Request) -> dict:
        return {"got": len(await request.body())}

    install_guard(app, policy, content_types={"/v1/voices": FORM, "/runs/*/upload": FORM})
    # The test client reports the URL's host and port as the connection's own, as uvicorn does.
    return TestClient(app, base_url=f"http://127.0.0.1:{PORT}")


def loopback_policy(**fields) -> GuardPolicy:
    return GuardPolicy.from_config(ServerConfig(port=PORT, **fields), key_required=False)


@pytest.fixture
def client() -> TestClient:
    return guarded(loopback_policy())


def call(client: TestClient, method: str, path: str = "/v1/audio/speech", **headers: str):
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    body = b'{"input": "Hi."}' if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, path, content=body, headers=headers)


def error_of(answer, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert body["code"] == code and body["type"] == "invalid_request_error" and set(body) == {"message", "type", "param", "code"}
    return body["message"]


def test_a_page_on_another_site_cannot_post_a_text_plain_body(client):
    answer = call(client, "POST", origin=ATTACKER, content_type="text/plain")
    assert "attacker.example" in error_of(answer, 403, "origin_not_allowed")


def test_the_origin_is_refused_even_with_the_right_content_type(client):
    assert "cors_origins" in error_of(call(client, "POST", origin=ATTACKER, content_type="application/json"), 403, "origin_not_allowed")
    error_of(call(client, "POST", origin="null", content_type="application/json"), 403, "origin_not_allowed")
    error_of(call(client, "POST", origin=f"http://127.0.0.1:{PORT + 1}", content_type="application/json"), 403, "origin_not_allowed")
    error_of(call(client, "GET", "/v1/voices", origin="http://127.0.0.1.attacker.example:8000"), 403, "origin_not_allowed")


@pytest.mark.parametrize("origin", [f"http://127.0.0.1:{PORT}", f"http://localhost:{PORT}", f"http://[::1]:{PORT}", f"HTTP://LocalHost:{PORT}/"])
def test_the_servers_own_origin_under_any_loopback_name_may_call(client, origin):
    answer = call(client, "POST", origin=origin, content_type="application/json; charset=utf-8")
    assert answer.status_code == 200 and answer.json() == {"got": 16}


def test_requests_without_origin_from_programs_pass(client):
    assert call(client, "POST", content_type="application/json").status_code == 200
    assert call(client, "GET", "/v1/voices").status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_a_json_route_takes_only_json(client, content_type):
    headers = {"content_type": content_type} if content_type else {}
    assert "application/json" in error_of(call(client, "POST", **headers), 415, "unsupported_media_type")


def test_an_upload_route_takes_only_multipart_forms(client):
    error_of(call(client, "POST", "/v1/voices", content_type="application/json"), 415, "unsupported_media_type")
    error_of(call(client, "POST", "/v1/voices", content_type="text/plain"), 415, "unsupported_media_type")
    assert call(client, "POST", "/v1/voices", content_type="multipart/form-data; boundary=abc").status_code == 200
    error_of(call(client, "POST", "/runs/a/upload", content_type="text/plain"), 415, "unsupported_media_type")  # a glob route


@pytest.mark.parametrize("host", ["attacker.example:8000", "attacker.example", "127.0.0.1:9999", "localhost", "0.0.0.0:8000",
                                  "127.0.0.1.nip.io:8000", "[::1:8000", "127.0.0.1:8000@evil"])
def test_without_a_key_a_host_name_that_is_not_this_server_is_misdirected(client, host):
    message = error_of(call(client, "GET", "/v1/voices", host=host), 421, "misdirected_request")
    assert "server.allowed_hosts" in message


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST.:8000", "[::1]:8000", "127.0.0.2:8000", "app.localhost:8000"])
def test_loopback_names_at_the_servers_port_are_this_server(client, host):
    assert call(client, "GET", "/v1/voices", host=host).status_code == 200


def test_listed_names_and_origins_are_let_in():
    client = guarded(loopback_policy(allowed_hosts=["tts.lan", "proxy.lan:443"], cors_origins=["http://localhost:3000/"]))
    assert call(client, "GET", "/v1/voices", host="tts.lan:8000").status_code == 200
    assert call(client, "GET", "/v1/voices", host="proxy.lan:443").status_code == 200
    error_of(call(client, "GET", "/v1/voices", host="tts.lan:9000"), 421, "misdirected_request")
    assert call(client, "POST", origin="http://localhost:3000", content_type="application/json").status_code == 200
    assert call(client, "POST", origin="http://tts.lan:8000", content_type="application/json").status_code == 200
    error_of(call(client, "POST", origin="http://localhost:3001", content_type="application/json"), 403, "origin_not_allowed")


def test_with_a_key_any_host_name_answers_but_origins_are_still_checked():
    client = guarded(GuardPolicy.from_config(ServerConfig(host="0.0.0.0", port=PORT), key_required=True))
    assert call(client, "GET", "/v1/voices", host="192.168.1.20:8000").status_code == 200
    # a page served by this host under that name is same-origin...
    assert call(client, "POST", host="192.168.1.20:8000", origin="http://192.168.1.20:8000", content_type="application/json").status_code == 200
    # ...a page elsewhere is not
    error_of(call(client, "POST", host="192.168.1.20:8000", origin=ATTACKER, content_type="application/json"), 403, "origin_not_allowed")


def test_a_request_with_two_origin_headers_is_refused(client):
    answer = client.request("GET", "/v1/voices", headers=[("origin", ATTACKER), ("origin", f"http://127.0.0.1:{PORT}")])
    error_of(answer, 400, "duplicate_header")


def test_a_websocket_from_another_origin_is_closed_before_it_opens():
    app = FastAPI()

    @app.websocket("/ws")
    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")
        await ws.close()

    install_guard(app, loopback_policy())
    with TestClient(app, base_url=f"http://127.0.0.1:{PORT}") as client:
        with client.websocket_connect(f"ws://127.0.0.1:{PORT}/ws", headers={"origin": f"http://127.0.0.1:{PORT}"}) as ws:
            assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect(f"ws://127.0.0.1:{PORT}/ws", headers={"origin": ATTACKER}):
                pass
        assert closed.value.code == 1008


def test_authorities_parse_as_browsers_send_them():
    assert split_authority("LocalHost.:8000", 80) == ("localhost", 8000)
    assert split_authority("[::1]:8000", 80) == ("::1", 8000)
    assert split_authority("[::1]", 80) == ("::1", 80)
    assert split_authority("example.com", 443) == ("example.com", 443)
    for broken in ("", ":8000", "host:0", "host:99999", "host:80x", "[::1", "a b:80", "user@host:80"):
        assert split_authority(broken, 80) is None, broken
