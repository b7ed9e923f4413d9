"""A local HTTP server implementing the few Twilio REST endpoints the bridge uses, for tests.

The `twilio` client is pointed at it by an HTTP client that rewrites https://api.twilio.com to
this server; every request is recorded so tests can check exactly what was sent.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_API = "https://api.twilio.com"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    auth: str | None


@dataclass
class FakeTwilioApi:
    account_sid: str
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # PN sid → resource
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""

    def add_number(self, phone_number: str, **fields: Any) -> str:
        sid = "PN" + f"{len(self.numbers) + 1:032x}"
        self.numbers[sid] = {"sid": sid, "account_sid": self.account_sid, "phone_number": phone_number,
                             "voice_url": None, "voice_method": "POST", "status_callback": None,
                             "status_callback_method": "POST", **fields}
        return sid

    def __enter__(self) -> FakeTwilioApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode())) if length else {}
                api.requests.append(Recorded(method, url.path, dict(urllib.parse.parse_qsl(url.query)), form, self.headers.get("Authorization")))
                prefix = f"/2010-04-01/Accounts/{api.account_sid}"
                if method == "GET" and url.path == f"{prefix}/IncomingPhoneNumbers.json":
                    wanted = dict(urllib.parse.parse_qsl(url.query)).get("PhoneNumber")
                    found = [n for n in api.numbers.values() if wanted in (None, n["phone_number"])]
                    return self._answer(200, {"incoming_phone_numbers": found, "next_page_uri": None, "page": 0, "page_size": 50})
                match = re.fullmatch(rf"{prefix}/IncomingPhoneNumbers/(PN\w+)\.json", url.path)
                if method == "POST" and match and match.group(1) in api.numbers:
                    number = api.numbers[match.group(1)]
                    keys = {"VoiceUrl": "voice_url", "VoiceMethod": "voice_method", "StatusCallback": "status_callback", "StatusCallbackMethod": "status_callback_method"}
                    number.update({keys[k]: v for k, v in form.items() if k in keys})
                    return self._answer(200, number)
                match = re.fullmatch(rf"{prefix}/Calls/(CA\w+)\.json", url.path)
                if method == "POST" and match:
                    call = api.calls.setdefault(match.group(1), {"sid": match.group(1), "account_sid": api.account_sid, "status": "in-progress"})
                    if "Status" in form:
                        call["status"] = form["Status"]
                    return self._answer(200, call)
                return self._answer(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def client(self, auth_token: str = "test-token", asynchronous: bool = False) -> Client:
        base = self.base_url

        class Local(TwilioHttpClient):
            def request(self, method: str, url: str, *args: Any, **kwargs: Any):  # noqa: ANN201
                return super().request(method, url.replace(TWILIO_API, base), *args, **kwargs)

        class LocalAsync(AsyncTwilioHttpClient):
            async def request(self, method: str, url: str, *args: Any, **kwargs: Any):  # noqa: ANN201
                return await super().request(method, url.replace(TWILIO_API, base), *args, **kwargs)

        http = LocalAsync() if asynchronous else Local()
        return Client(self.account_sid, auth_token, http_client=http)
