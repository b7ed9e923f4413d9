"""Twilio REST calls (call control, number configuration) against a local Twilio API."""

from __future__ import annotations

import argparse
import base64

from conftest import run
from twilio_api import FakeTwilioApi

from bridge.cli import run_twilio_command
from twiml.rest import CallControl

ACCOUNT = "AC" + "a" * 32
NUMBER = "+15550100000"


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"{ACCOUNT}:{token}".encode()).decode()


def test_configure_points_the_number_here_and_prints_what_changed(capsys) -> None:  # noqa: ANN001
    with FakeTwilioApi(ACCOUNT) as api:
        sid = api.add_number(NUMBER, voice_url="https://old.example.com/hook")
        args = argparse.Namespace(twilio_command="configure", number=NUMBER, url="https://bridge.example.com")
        assert run_twilio_command(args, api.client()) == 0
        lookup, update = api.requests
        assert (lookup.method, lookup.query) == ("GET", {"PhoneNumber": NUMBER, "PageSize": "2"})
        assert (update.method, update.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{sid}.json")
        assert update.form == {
            "VoiceUrl": "https://bridge.example.com/voice",
            "VoiceMethod": "POST",
            "StatusCallback": "https://bridge.example.com/voice/status",
            "StatusCallbackMethod": "POST",
        }
        assert update.auth == _basic("test-token")
        out = capsys.readouterr().out
        assert "voice_url" in out and "https://old.example.com/hook -> https://bridge.example.com/voice" in out

        check = argparse.Namespace(twilio_command="check", number=NUMBER, url="https://bridge.example.com")
        assert run_twilio_command(check, api.client()) == 0
        assert "points at https://bridge.example.com/voice" in capsys.readouterr().out
        elsewhere = argparse.Namespace(twilio_command="check", number=NUMBER, url="https://other.example.com")
        assert run_twilio_command(elsewhere, api.client()) == 1
        assert "does NOT point" in capsys.readouterr().out


def test_unknown_number_is_a_clear_error(capsys) -> None:  # noqa: ANN001
    with FakeTwilioApi(ACCOUNT) as api:
        args = argparse.Namespace(twilio_command="check", number="+15559999999", url="https://b.example.com")
        assert run_twilio_command(args, api.client()) == 1
        assert "+15559999999 is not a number of this Twilio account" in capsys.readouterr().err


def test_call_control_hangs_up_and_transfers() -> None:
    async def scenario(api: FakeTwilioApi) -> None:
        client = api.client(asynchronous=True)
        control = CallControl(client)
        await control.hang_up("CA" + "1" * 32)
        await control.transfer("CA" + "2" * 32, "+15550123456")
        await client.http_client.close()

    with FakeTwilioApi(ACCOUNT) as api:
        run(scenario(api))
        hang_up, transfer = api.requests
        assert hang_up.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'1' * 32}.json"
        assert hang_up.form == {"Status": "completed"}
        assert transfer.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'2' * 32}.json"
        assert set(transfer.form) == {"Twiml"}
        assert "<Dial>+15550123456</Dial>" in transfer.form["Twiml"] and "<Say>" in transfer.form["Twiml"]
