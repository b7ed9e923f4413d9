"""A whole bridge in this process, for the demo, replays, tests and benchmarks: the embedded local
agent when the settings ask for it (VOICE_BRIDGE_UPSTREAM=local), the services, and the app."""

from __future__ import annotations

import contextlib
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential
from starlette.applications import Starlette
from twilio.rest import Client as TwilioClient

from ..app import create_app
from ..package_data import PackageDataMissing
from ..services import ServicePlan, prepare_services
from ..serving import serving
from ..settings import ConfigError, Settings
from ..tools import ToolRegistry
from .agent import LocalAgent


def embedded_agent(settings: Settings) -> LocalAgent:
    """The embedded agent with its clips loaded now: a bad clips folder is a ConfigError before start."""
    configured = settings.agent_clips_dir
    try:
        return LocalAgent(clips=configured)
    except PackageDataMissing:
        raise  # already one line naming the file
    except (OSError, EOFError, ValueError, KeyError, TypeError, wave.Error) as exc:
        source = "VOICE_BRIDGE_AGENT_CLIPS" if configured else "the clips shipped with the package (bridge/fixtures/audio)"
        raise ConfigError(f"{source}: the local agent's clips cannot be loaded: {exc}") from None


@dataclass(frozen=True, slots=True)
class LocalBridge:
    app: Starlette
    agent: LocalAgent | None  # None: the settings name another upstream
    url: str | None = None  # set by `served_bridge`: the base URL it listens on


@contextlib.asynccontextmanager
async def local_bridge(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    tools: ToolRegistry | None = None,
    twilio_client: TwilioClient | None = None,
    credential: AsyncTokenCredential | None = None,
    plan: ServicePlan | None = None,
    agent: LocalAgent | None = None,
) -> AsyncIterator[LocalBridge]:
    """The app over started services, and the embedded agent started first when the settings use it.
    ConfigError before anything starts. `plan` and `agent`: already checked / built by the caller."""
    plan = plan or prepare_services(settings, tools)
    if agent is None and settings.uses_embedded_agent:
        agent = embedded_agent(settings)
    async with contextlib.AsyncExitStack() as stack:
        if agent is not None:
            await agent.start()
            stack.push_async_callback(agent.stop)
        services = await stack.enter_async_context(
            plan.open(
                local_url=agent.url if agent is not None else None,
                clock=clock,
                twilio_client=twilio_client,
                credential=credential,
            )
        )
        yield LocalBridge(create_app(settings, services), agent)


@contextlib.asynccontextmanager
async def served_bridge(settings: Settings, **options: object) -> AsyncIterator[LocalBridge]:
    """`local_bridge` under uvicorn on a free loopback port (`serving`); `url` is its base URL."""
    async with local_bridge(settings, **options) as bridge, serving(bridge.app) as url:  # type: ignore[arg-type]
        yield LocalBridge(bridge.app, bridge.agent, url)
