"""TwiML documents the webhook answers with, built by the `twilio` library."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, VoiceResponse


def connect_stream(stream_url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream>` to our media-stream socket, passing call facts as `<Parameter>`s.

    Twilio forbids a query string on the Stream URL, so everything the stream needs to know
    travels as parameters and comes back in the `start` event's customParameters.
    """
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return response.to_xml()
