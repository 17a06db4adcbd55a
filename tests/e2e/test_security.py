"""API keys, TLS on both ports and per-session read tokens, against a real daemon on loopback
that has keys and a self-signed certificate configured."""
import asyncio
import datetime
import http.client
import io
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import soundfile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemon import Daemon
from support import tiny_daemon_config
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamrnn.serve.auth import key_hash
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.tls import client_context
from streamrnn_client.websocket import ServerError, subscribe

KEY = "test-key-for-the-locked-daemon"
CONFIG = json.dumps({"type": "config", "sample_rate": 16000, "encoding": "f32le"})


def self_signed(folder):
    """A certificate for localhost and 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def locked(tiny_models, tmp_path_factory):
    """A daemon that needs KEY and speaks only TLS on both ports; yields it and its certificate."""
    folder = tmp_path_factory.mktemp("locked")
    cert, key = self_signed(folder)
    server = Daemon(tiny_daemon_config(tiny_models, folder, f'[auth]\napi_key_sha256 = ["{key_hash(KEY)}"]\n'
                                                            f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'))
    yield server, cert
    server.stop()


def noise(seconds=0.5):
    return (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype("<f4").tobytes()


def https(daemon, path, headers=None, cert=None):
    """(status, headers, body) of a GET over https, trusting the test certificate."""
    context = client_context(ca=str(cert))
    request = urllib.request.Request(daemon.http + path, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    try:
        with opener.open(request) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def ws_status(url, cert, **headers):
    """What the WebSocket handshake to `url` gets: 101 (then a session), or the refusal's HTTP status."""
    async def attempt():
        try:
            context = client_context(ca=str(cert) if cert else None)
            async with connect(url, ssl=context, additional_headers=headers) as ws:
                await ws.send(CONFIG)
                assert json.loads(await ws.recv())["type"] == "session"
                return 101
        except InvalidStatus as err:
            return err.response.status_code
    return asyncio.run(attempt())


def test_websocket_needs_the_key(locked):
    daemon, cert = locked
    url = daemon.url + "/v1/recognize"
    assert ws_status(url, cert) == 401
    assert ws_status(url, cert, Authorization="Bearer wrong-key") == 401
    assert ws_status(url, cert, Authorization=f"Bearer {KEY}") == 101
    assert ws_status(url, cert, **{"X-API-Key": KEY}) == 101
    assert ws_status(url + f"?api_key={KEY}", cert) == 101
    assert ws_status(daemon.url + "/v1/suggest", cert, **{"X-API-Key": "wrong"}) == 401


def test_http_needs_the_key_except_healthz(locked):
    daemon, cert = locked
    assert https(daemon, "/healthz", cert=cert)[::2] == (200, b"ok\n")
    for path in ("/metrics", "/app.js", "/nope"):
        assert https(daemon, path, cert=cert)[0] == 401, path
        assert https(daemon, path, {"Authorization": "Bearer wrong"}, cert)[0] == 401, path
    status, _, body = https(daemon, "/metrics", {"Authorization": f"Bearer {KEY}"}, cert)
    assert status == 200 and b"streamrnn_sessions_total" in body


def test_browser_gets_a_key_form_then_a_cookie(locked):
    daemon, cert = locked
    status, headers, body = https(daemon, "/", cert=cert)
    assert status == 401 and b'name="api_key"' in body  # the form a browser shows
    assert https(daemon, "/?api_key=wrong", cert=cert)[0] == 401
    status, headers, _ = https(daemon, f"/?api_key={KEY}", cert=cert)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    jar = cookie.split(";")[0]
    status, _, page = https(daemon, "/", {"Cookie": jar}, cert)
    assert status == 200 and b"<html" in page.lower()
    # The page's WebSocket sends the cookie; another site's page must not be able to use it.
    assert ws_status(daemon.url + "/v1/recognize", cert, Cookie=jar, Origin=daemon.http) == 101
    assert ws_status(daemon.url + "/v1/recognize", cert, Cookie=jar, Origin="https://evil.example") == 401


def grpc_code(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def test_grpc_needs_the_key_except_health(locked):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    daemon, cert = locked
    for api_key in (None, "wrong"):
        with GrpcClient(daemon.grpc, api_key=api_key, ca=str(cert)) as client:
            assert grpc_code(lambda: client.suggest("the")) == grpc.StatusCode.UNAUTHENTICATED
            assert grpc_code(lambda: list(client.streaming_recognize([noise()], encoding="f32le"))) \
                == grpc.StatusCode.UNAUTHENTICATED
            assert grpc_code(lambda: list(client.subscribe("x", "y"))) == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    with GrpcClient(daemon.grpc, api_key=KEY, ca=str(cert)) as client:
        assert len(client.suggest("the", 2).words) == 2
        events = list(client.streaming_recognize([noise()], encoding="f32le"))
        assert events[0].session.read_token and events[-1].end.reason == "eof"


def test_plain_text_to_the_tls_ports_is_refused(locked):
    daemon, _ = locked
    with pytest.raises((http.client.HTTPException, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=30).read()
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=30) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not raw.recv(1024).startswith(b"HTTP/1.1 200")
    with GrpcClient(daemon.grpc, api_key=KEY) as client:  # no TLS
        assert grpc_code(lambda: client.stub.Suggest(client.pb.SuggestRequest(text="the"),
                                                     metadata=client.metadata, timeout=30)) \
            == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ssl.SSLCertVerificationError):  # TLS, but a certificate the client does not trust
        ws_status(daemon.url + "/v1/recognize", cert=None)


def test_read_token_guards_subscriptions(locked):
    daemon, cert = locked
    context = client_context(ca=str(cert))

    async def scenario():
        speaker = await connect(daemon.url + "/v1/recognize", ssl=context,
                                additional_headers={"Authorization": f"Bearer {KEY}"})
        other = await connect(daemon.url + "/v1/recognize", ssl=context,
                              additional_headers={"Authorization": f"Bearer {KEY}"})
        for ws in (speaker, other):
            await ws.send(CONFIG)
        mine, theirs = [json.loads(await ws.recv()) for ws in (speaker, other)]
        refusals = []
        for token in (theirs["read_token"], "", mine["read_token"][:-1]):
            with pytest.raises(ServerError) as info:
                await anext(subscribe(daemon.url, mine["session_id"], token, KEY, context))
            refusals.append(str(info.value))
        with pytest.raises(ServerError) as info:
            await anext(subscribe(daemon.url, "no-such-session", mine["read_token"], KEY, context))
        listener = subscribe(daemon.url, mine["session_id"], mine["read_token"], KEY, context)
        first = asyncio.ensure_future(anext(listener))
        await asyncio.sleep(0)
        while not first.done() and not daemon_has_subscriber(daemon, cert):
            await asyncio.sleep(0.05)
        await speaker.send(noise())
        await speaker.send(json.dumps({"type": "eof"}))
        followed = [await first] + [e async for e in listener]
        for ws in (speaker, other):
            await ws.close()
        return refusals, str(info.value), followed

    refusals, unknown, followed = asyncio.run(scenario())
    # A wrong token and an unknown session look the same: the id's existence is not revealed.
    assert all(r.startswith("unknown_session: no live session") and "with that read token" in r for r in refusals)
    assert unknown.startswith("unknown_session: no live session 'no-such-session' with that read token")
    assert followed[-1]["type"] == "end" and any(e["type"] == "final" for e in followed)


def test_grpc_subscribe_needs_the_read_token(locked):
    daemon, cert = locked
    release = threading.Event()
    with GrpcClient(daemon.grpc, api_key=KEY, ca=str(cert)) as client:
        def requests():  # a session that stays open until released
            yield client.pb.StreamingRecognizeRequest(config=client.config(encoding="f32le"))
            release.wait(120)
            yield client.pb.StreamingRecognizeRequest(audio=noise())
        speaker = client.stub.StreamingRecognize(requests(), metadata=client.metadata)
        started = next(speaker).session
        assert grpc_code(lambda: list(client.subscribe(started.session_id, "wrong"))) == grpc.StatusCode.NOT_FOUND
        assert grpc_code(lambda: list(client.subscribe("no-such-session", started.read_token))) \
            == grpc.StatusCode.NOT_FOUND
        follower = client.subscribe(started.session_id, started.read_token)
        while not daemon_has_subscriber(daemon, cert):
            time.sleep(0.05)
        release.set()
        followed = [event_from_proto(m) for m in follower]
        spoken = [e for e in map(event_from_proto, speaker) if e["type"] != "ack"]  # acks: the speaker's own
    assert followed == spoken and followed[-1]["type"] == "end"


def daemon_has_subscriber(daemon, cert) -> bool:
    body = https(daemon, "/metrics", {"Authorization": f"Bearer {KEY}"}, cert)[2].decode()
    line = next(l for l in body.splitlines() if l.startswith("streamrnn_subscribers_active"))
    return float(line.split()[1]) >= 1


def streamrnn_cli(*args):
    return subprocess.run([sys.executable, "-m", "streamrnn", *args], capture_output=True, text=True, timeout=300)


def test_key_command_prints_a_key_and_its_config_line():
    result = streamrnn_cli("key", "new")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    key = lines[0]
    assert len(key) >= 40
    assert lines[-1] == f'api_key_sha256 = ["{key_hash(key)}"]'
    assert streamrnn_cli("key", "new").stdout.splitlines()[0] != key


def test_stream_command_with_key_and_certificate(locked, tmp_path):
    daemon, cert = locked
    audio = tmp_path / "noise.wav"
    soundfile.write(audio, np.frombuffer(noise(1.0), "<f4"), 16000)
    result = streamrnn_cli("stream", str(audio), "--url", daemon.url, "--ca", str(cert), "--api-key", KEY, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "session" and events[-1] == {"type": "end", "session_id": events[0]["session_id"],
                                                              "reason": "eof", "seq": events[-1]["seq"]}
    refused = streamrnn_cli("stream", str(audio), "--url", daemon.url, "--ca", str(cert))
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr and "API key" in refused.stderr
    untrusted = streamrnn_cli("stream", str(audio), "--url", daemon.url, "--api-key", KEY)
    assert untrusted.returncode != 0 and "certificate verify failed" in untrusted.stderr


def test_browser_page_asks_for_the_key_then_streams(locked):
    """In Chromium: the page answers with the key form, the key typed in unlocks the page
    (a cookie), and Start opens a session whose subscribe URL carries its read token."""
    from test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser_setup
    require_browser_setup()
    from playwright.sync_api import sync_playwright
    daemon, _ = locked
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS + ["--ignore-certificate-errors"])
        try:
            page = browser.new_page()
            page.goto(daemon.http + "/")
            page.fill("#api_key", "wrong")
            page.click("button[type=submit]")
            assert page.locator("#api_key").count() == 1  # refused: the form again
            page.fill("#api_key", KEY)
            page.click("button[type=submit]")
            page.wait_for_selector("#start")
            assert "api_key" not in page.url
            page.click("#start")
            page.wait_for_function("document.getElementById('status').dataset.state === 'listening'",
                                   timeout=30_000)
            page.wait_for_function("document.getElementById('session').textContent !== 'none'", timeout=30_000)
            subscribe_url = page.text_content("#subscribe-url")
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').dataset.state !== 'busy'", timeout=30_000)
            status = page.text_content("#status")
        finally:
            browser.close()
    assert re.search(r"/v1/subscribe/[0-9a-f]{32}\?read_token=[\w-]{40,}$", subscribe_url), subscribe_url
    assert status.startswith("Stopped"), status


def test_openai_api_and_vosk_over_tls_need_the_key(locked):
    """The other protocols on the HTTP port go through the same TLS and key checks."""
    import openai
    daemon, cert = locked
    upload = ("noise.wav", wav_file(noise(1.0)))
    for key, outcome in ((KEY, None), ("wrong-key", openai.AuthenticationError)):
        client = openai.OpenAI(base_url=daemon.http + "/v1", api_key=key, max_retries=0,
                               http_client=openai.DefaultHttpxClient(verify=client_context(ca=str(cert))))
        if outcome is None:
            assert isinstance(client.audio.transcriptions.create(model="streamrnn", file=upload).text, str)
        else:
            with pytest.raises(outcome):
                client.audio.transcriptions.create(model="streamrnn", file=upload)
    assert ws_status(daemon.url + "/vosk", cert) == 401

    async def vosk_answer():
        async with connect(daemon.url + f"/vosk?api_key={KEY}", ssl=client_context(ca=str(cert))) as ws:
            await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            await ws.send(np.zeros(1600, dtype="<i2").tobytes())
            return json.loads(await ws.recv())
    assert asyncio.run(vosk_answer()) == {"partial": ""}


def wav_file(f32le: bytes) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.frombuffer(f32le, dtype="<f4"), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()
