"""TwiML documents the webhooks answer with, built by the `twilio` library."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, VoiceResponse

BUSY_MESSAGE = "Sorry, all of our lines are busy right now. Please call again in a few minutes. Goodbye."
APOLOGY_MESSAGE = "Sorry, we are having technical difficulties."
TRANSFER_MESSAGE = "Please hold while I connect you to a colleague."


def connect_stream(stream_url: str, parameters: Mapping[str, str], after_stream_url: str) -> str:
    """`<Connect><Stream>` to our media-stream socket, then `<Redirect>` back to us.

    Twilio forbids a query string on the Stream URL, so what the stream needs travels as
    `<Parameter>`s and returns in the `start` event. The verbs after `</Connect>` run when the
    bridge closes the socket, which lets the bridge choose what the caller hears next.
    """
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.redirect(after_stream_url, method="POST")
    return str(response.to_xml())


def busy() -> str:
    """No capacity for another call: say so and hang up (no stream is opened)."""
    response = VoiceResponse()
    response.say(BUSY_MESSAGE)
    response.hangup()
    return str(response.to_xml())


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def apology(fallback_number: str | None) -> str:
    """The model is unreachable: apologise, then hand the caller to a person if we have one."""
    response = VoiceResponse()
    then = " Let me connect you to a colleague." if fallback_number else " Please call again later. Goodbye."
    response.say(APOLOGY_MESSAGE + then)
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response.to_xml())


def transfer(number: str, handoff: str | None = TRANSFER_MESSAGE) -> str:
    """What a live call is updated to when it is transferred to a human."""
    response = VoiceResponse()
    if handoff:
        response.say(handoff)
    response.dial(number)
    return str(response.to_xml())
