"""TwiML, signatures and public URLs, then the real routes on a loopback server."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from conftest import AUTH_TOKEN, run, running_bridge
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from bridge.devtools.phone.simulator import parse_stream_twiml, redirect_after_stream, twiml_verbs
from twiml import documents
from twiml.documents import connect_stream
from twiml.signatures import TwilioSigner
from twiml.urls import public_base_url, websocket_url


def test_connect_stream_twiml_then_redirect() -> None:
    xml = connect_stream("wss://bridge.example.com/media-stream", {"CallSid": "CA1", "To": "+1555"}, "https://bridge.example.com/voice/after-stream")
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == ["Connect", "Redirect"]
    assert root.find("./Redirect").get("method") == "POST"
    assert redirect_after_stream(xml) == "https://bridge.example.com/voice/after-stream"
    assert parse_stream_twiml(xml) == ("wss://bridge.example.com/media-stream", {"CallSid": "CA1", "To": "+1555"})


def test_busy_apology_and_transfer_documents() -> None:
    assert twiml_verbs(documents.busy()) == ["Say", "Hangup"]
    assert twiml_verbs(documents.hang_up()) == ["Hangup"]
    assert twiml_verbs(documents.apology(None)) == ["Say", "Hangup"]
    with_fallback = documents.apology("+15550100")
    assert twiml_verbs(with_fallback) == ["Say", "Dial"]
    assert ET.fromstring(with_fallback).find("./Dial").text == "+15550100"
    assert twiml_verbs(documents.transfer("+15550100")) == ["Say", "Dial"]


def test_signatures_match_twilios_validator() -> None:
    signer = TwilioSigner(AUTH_TOKEN)
    params = {"CallSid": "CA1", "From": "+1", "To": "+2"}
    signature = signer.sign("https://h.example/voice", params)
    assert RequestValidator(AUTH_TOKEN).validate("https://h.example/voice", params, signature)
    assert signer.is_valid("https://h.example/voice", params, signature)
    assert not signer.is_valid("https://h.example/voice", {**params, "To": "+3"}, signature)
    assert not signer.is_valid("http://h.example/voice", params, signature)
    assert not signer.is_valid("https://h.example/voice", params, None)
    assert not TwilioSigner("other-token").is_valid("https://h.example/voice", params, signature)


@pytest.mark.parametrize(
    ("configured", "scheme", "host", "expected"),
    [
        ("https://pub.example.com/", "http", "10.0.0.5:8000", "https://pub.example.com"),
        (None, "http", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        (None, "https", "pub.example.com", "https://pub.example.com"),
        (None, "ws", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        (None, "wss", "pub.example.com", "https://pub.example.com"),
    ],
)
def test_public_base_url(configured, scheme, host, expected) -> None:  # noqa: ANN001
    assert public_base_url(configured, scheme, host) == expected


def test_stream_url_is_wss_behind_https() -> None:
    assert websocket_url("https://pub.example.com", "/media-stream") == "wss://pub.example.com/media-stream"
    assert websocket_url("http://127.0.0.1:8000", "/media-stream") == "ws://127.0.0.1:8000/media-stream"


def test_routes_check_signatures_and_answer_twiml() -> None:
    async def scenario() -> None:
        async with running_bridge(public_url="https://pub.example.com") as (url, _):
            signer = TwilioSigner(AUTH_TOKEN)
            form = {"CallSid": "CA" + "1" * 32, "From": "+15550001", "To": "+15550002"}
            body = urllib.parse.urlencode(form)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok"}
                assert (await http.get("/readyz")).status_code == 200
                # Twilio signs the public URL, not the one the app sees behind the proxy.
                good = {**headers, "X-Twilio-Signature": signer.sign("https://pub.example.com/voice", form)}
                answer = await http.post("/voice", content=body, headers=good)
                assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
                stream_url, params = parse_stream_twiml(answer.text)
                assert stream_url == "wss://pub.example.com/media-stream"
                token = params.pop("StreamToken")
                assert params == {"CallSid": form["CallSid"], "From": "+15550001", "To": "+15550002"}
                assert token.count(".") == 2  # <expiry>.<reservation id>.<hmac>
                wrong_url = {**headers, "X-Twilio-Signature": signer.sign(f"{url}/voice", form)}
                assert (await http.post("/voice", content=body, headers=wrong_url)).status_code == 403
                assert (await http.post("/voice", content=body, headers=headers)).status_code == 403
                tampered = body.replace("%2B15550002", "%2B15550003")
                assert (await http.post("/voice", content=tampered, headers=good)).status_code == 403
                assert (await http.post("/voice", content="{}", headers={"Content-Type": "application/json"})).status_code == 415
                assert (await http.get("/voice")).status_code == 405

            ws_url = url.replace("http://", "ws://") + "/media-stream"
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(ws_url, proxy=None):
                    pass
            assert refused.value.response.status_code == 403
            bad = {"X-Twilio-Signature": signer.sign("wss://other.example.com/media-stream", {})}
            with pytest.raises(websockets.InvalidStatus):
                async with connect(ws_url, proxy=None, additional_headers=bad):
                    pass
            good_ws = {"X-Twilio-Signature": signer.sign("wss://pub.example.com/media-stream", {})}
            async with connect(ws_url, proxy=None, additional_headers=good_ws) as ws:
                await ws.send("not json")
                await ws.wait_closed()
                assert ws.close_code == 1007  # invalid_json

    run(scenario())
