"""Agent profiles: the example file, lookup by called number, the default from the environment,
the session config a profile asks for, and a table of wrong files with the exact line named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.dialects import GADialect, InputTranscription, ToolSpec, TurnDetection, VoiceLiveDialect
from bridge.profiles import (
    AgentProfile,
    ProfileBook,
    ProfileError,
    Voice,
    default_profile,
    session_config,
    voice_from_name,
)
from bridge.settings import ConfigError, Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "profiles" / "example.toml"
DEFAULT = AgentProfile(name="default", instructions="You answer the phone.", voice=Voice("alloy"))
HANG_UP = ToolSpec("hang_up", "End the call.")


def book(text: str) -> ProfileBook:
    return ProfileBook.parse(textwrap.dedent(text).lstrip("\n"), DEFAULT, "profiles.toml")


def test_the_example_file_loads() -> None:
    profiles = ProfileBook.load(EXAMPLE, DEFAULT)
    sales = profiles.for_number("+14155550100")
    assert sales.name == "sales" and profiles.for_number("+14155550101") is sales  # written "+1 (415) 555-0101"
    assert sales.voice == Voice("en-US-AvaNeural", "azure-standard")
    assert sales.turn_detection == TurnDetection("semantic", silence_duration_ms=500, remove_filler_words=True)
    assert sales.transcription == InputTranscription("azure-speech", "en-US")
    assert (sales.max_call_seconds, sales.dtmf, sales.greeting is not None) == (900, "forward", True)
    support = profiles.for_number("+442071838750")
    assert support.voice == Voice("marin", "openai") and not support.echo_cancellation
    assert support.turn_detection == TurnDetection("server_vad", threshold=0.6, silence_duration_ms=400)
    assert [p.name for p in profiles.profiles] == ["default", "sales", "support"]
    profiles.check(VoiceLiveDialect(), "pcm24k")
    profiles.check(VoiceLiveDialect(), "g711")


@pytest.mark.parametrize("to", ["+15550001111", "", None, "sip:agent@example.com", "client:alice"])
def test_any_other_number_gets_the_default(to: str | None) -> None:
    assert ProfileBook.load(EXAMPLE, DEFAULT).for_number(to) is DEFAULT


def test_no_file_means_only_the_default() -> None:
    profiles = ProfileBook.load(None, DEFAULT)
    assert profiles.for_number("+14155550100") is DEFAULT and profiles.profiles == (DEFAULT,)


def test_a_profile_inherits_what_it_leaves_out_from_the_default() -> None:
    default = AgentProfile(
        name="default",
        instructions="Default instructions.",
        voice=Voice("cedar"),
        tools=("hang_up",),
        max_call_seconds=600,
    )
    profiles = ProfileBook.parse('[profiles.short]\nnumbers = ["+14155550123"]\ngreeting = "Say hi."\n', default)
    short = profiles.for_number("+14155550123")
    assert (short.instructions, short.voice, short.tools, short.max_call_seconds, short.greeting) == (
        "Default instructions.", Voice("cedar"), ("hang_up",), 600, "Say hi."
    )  # fmt: skip


def test_the_default_profile_comes_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "VOICE_BRIDGE_INSECURE_DEV": "1",
            "VOICE_BRIDGE_INSTRUCTIONS": "Be Contoso.",
            "VOICE_BRIDGE_VOICE": "en-US-AvaNeural",
        }
    )
    profile = default_profile(settings)
    assert (profile.name, profile.instructions, profile.voice) == (
        "default",
        "Be Contoso.",
        Voice("en-US-AvaNeural", "azure-standard"),
    )
    assert (profile.noise_suppression, profile.echo_cancellation, profile.dtmf, profile.tools) == (
        True,
        True,
        "off",
        (),
    )


@pytest.mark.parametrize(
    ("name", "voice_type"),
    [
        ("alloy", "openai"),
        ("marin", "openai"),
        ("en-US-AvaNeural", "azure-standard"),
        ("en-US-Ava:DragonHDLatestNeural", "azure-standard"),
        ("zh-CN-XiaoxiaoMultilingualNeural", "azure-standard"),
    ],
)
def test_a_voice_name_alone_says_its_type(name: str, voice_type: str) -> None:
    assert voice_from_name(name) == Voice(name, voice_type)


def test_a_profile_becomes_a_session_config() -> None:
    profile = ProfileBook.load(EXAMPLE, DEFAULT).for_number("+14155550100")
    config = session_config(profile, "g711")
    assert (config.instructions, config.voice, config.voice_type, config.audio_mode) == (
        profile.instructions,
        "en-US-AvaNeural",
        "azure-standard",
        "g711",
    )
    assert (config.turn_detection, config.transcription, config.greeting) == (
        profile.turn_detection,
        profile.transcription,
        profile.greeting,
    )
    assert config.noise_suppression and config.echo_cancellation and config.tools == ()


def test_tools_are_looked_up_by_name() -> None:
    profile = AgentProfile(name="p", instructions="x", voice=Voice("alloy"), tools=("hang_up",))
    assert session_config(profile, "pcm24k", {"hang_up": HANG_UP}).tools == (HANG_UP,)
    with pytest.raises(ProfileError, match=r"profile 'p': unknown tool\(s\) hang_up \(known: none yet\)"):
        session_config(profile, "pcm24k")


def test_check_refuses_what_the_upstream_cannot_do_naming_the_profile_line() -> None:
    profiles = ProfileBook.load(EXAMPLE, DEFAULT)
    with pytest.raises(
        ProfileError,
        match=rf"^{EXAMPLE}:28: profile 'sales' cannot run on this upstream: voice type 'azure-standard' needs Voice Live",
    ):
        profiles.check(GADialect(), "pcm24k")
    with_tool = book('[profiles.t]\nnumbers = ["+14155550199"]\ntools = ["hang_up"]\n')
    with pytest.raises(ProfileError, match=r"^profiles.toml:1: profile 't': unknown tool\(s\) hang_up"):
        with_tool.check(GADialect(), "pcm24k")
    with_tool.check(GADialect(), "pcm24k", {"hang_up": HANG_UP})


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="nope.toml: VOICE_BRIDGE_PROFILES names a file that does not exist"):
        ProfileBook.load(tmp_path / "nope.toml", DEFAULT)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ProfileError, match="cannot read the profiles file"):
        ProfileBook.load(binary, DEFAULT)
    assert issubclass(ProfileError, ConfigError)  # the CLI reports it like any configuration error


BAD_FILES = [
    # TOML syntax: tomllib's own line and column
    ('[profiles.a]\nnumbers = ["+14155550100"\ngreeting = "x"\n', "profiles.toml:3:1: invalid TOML: Unclosed array"),
    ('[profiles.a]\nnumbers = ["+14155550100"]\ninstructions = "unterminated\n', "profiles.toml:3:"),
    # meaning: the line of the offending key
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n\nvoise = "alloy"\n',
        "profiles.toml:4: profiles.a.voise: unknown key 'voise'",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nmax_call_seconds = "600"\n',
        "profiles.toml:3: profiles.a.max_call_seconds: must be a whole number, got a string",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nmax_call_seconds = 0\n',
        "profiles.toml:3: profiles.a.max_call_seconds: must be at least 1",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nnoise_suppression = "yes"\n',
        "profiles.toml:3: profiles.a.noise_suppression: must be true or false",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\ndtmf = "tones"\n',
        "profiles.toml:3: profiles.a.dtmf: 'tones' is not one of off, forward, collect",
    ),
    (
        '[profiles.a]\nnumbers = ["4155550100"]\n',
        "profiles.toml:2: profiles.a.numbers: '4155550100' is not an E.164 number",
    ),
    ("[profiles.a]\nnumbers = []\n", "profiles.toml:2: profiles.a.numbers: is empty"),
    ('[profiles.a]\ngreeting = "hi"\n', "profiles.toml:1: profiles.a: has no `numbers`"),
    (
        '[profiles.a]\nnumbers = "+14155550100"\n',
        "profiles.toml:2: profiles.a.numbers: must be a list of non-empty strings, got a string",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\ntools = ["hang_up", "hang_up"]\n',
        "profiles.toml:3: profiles.a.tools: lists an entry twice",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n\n[profiles.b]\ngreeting = "hi"\nnumbers = ["+1 415 555 0100"]\n',
        "profiles.toml:6: profiles.b.numbers: +14155550100 is already in profile 'a'",
    ),
    (
        '[profiles.default]\nnumbers = ["+14155550100"]\n',
        "profiles.toml:1: profiles.default: the profile name 'default' is reserved",
    ),
    (
        '[profile.a]\nnumbers = ["+14155550100"]\n',
        "profiles.toml:1: profile: unknown key 'profile' (expected one of profiles)",
    ),
    ('profiles = "all"\n', "profiles.toml:1: profiles: must be a table, got a string"),
    # nested tables and inline tables: the line of the key inside them
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n\n[profiles.a.turn_detection]\ntype = "semantic"\nthreshold = 1.5\n',
        "profiles.toml:6: profiles.a.turn_detection.threshold: must be a number from 0.0 to 1.0, got 1.5",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n[profiles.a.turn_detection]\ntype = "azure_semantic_vad"\n',
        "profiles.toml:4: profiles.a.turn_detection.type: 'azure_semantic_vad' is not one of server_vad, semantic, semantic_multilingual",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n[profiles.a.turn_detection]\nthreshold = 0.5\n',
        "profiles.toml:3: profiles.a.turn_detection: needs a `type`",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nturn_detection.type = "semantic"\nturn_detection.eagerness = "eager"\n',
        "profiles.toml:4: profiles.a.turn_detection.eagerness: 'eager' is not one of low, medium, high, auto",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n# the voice:\nvoice = { name = "Ava", type = "azure" }\n',
        "profiles.toml:4: profiles.a.voice.type: 'azure' is not one of openai, azure-standard",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nvoice = { type = "openai" }\n',
        "profiles.toml:3: profiles.a.voice: needs a `name`",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\nvoice = 7\n',
        "profiles.toml:3: profiles.a.voice: must be a table, got an integer",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n[profiles.a.transcription]\nlanguage = "en"\n',
        "profiles.toml:3: profiles.a.transcription: needs a `model`",
    ),
    (
        '[profiles.a]\nnumbers = ["+14155550100"]\n[profiles.a.transcription]\nmodel = "whisper-1"\nlang = "en"\n',
        "profiles.toml:5: profiles.a.transcription.lang: unknown key 'lang'",
    ),
    # lines after multi-line strings and arrays are still counted right
    (
        '[profiles.a]\ninstructions = """\nline one\nnot_a_key = 1\n"""\nnumbers = [\n  "+14155550100",\n  "+14155550101",\n]\ngreting = "x"\n',
        "profiles.toml:10: profiles.a.greting: unknown key 'greting'",
    ),
    (
        '["profiles"."a b"]\nnumbers = ["+14155550100"]\n"dtmf" = "loud"\n',
        "profiles.toml:3: profiles.\"a b\".dtmf: 'loud' is not one of",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_wrong_file_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as refused:
        ProfileBook.parse(text, DEFAULT, "profiles.toml")
    assert str(refused.value).startswith(message), str(refused.value)


def test_toml_syntax_errors_keep_their_line_and_column() -> None:
    with pytest.raises(ProfileError) as refused:
        ProfileBook.parse('[profiles.a]\nnumbers = ["+14155550100"\ngreeting = "x"\n', DEFAULT, "profiles.toml")
    assert str(refused.value) == "profiles.toml:3:1: invalid TOML: Unclosed array"
    assert "(at line" not in str(refused.value)
