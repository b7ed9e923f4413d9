"""A longer seeded chaos run (issue 13): hostile Twilio frames and hostile model events against a
real `voice-bridge serve`, a healthy call beside them all the time.

    .venv/bin/python benchmarks/chaos.py --examples 500 --upstream-examples 40 [--seed 13]

Prints a table per case family (cases, failures) and one JSON line: case count, failures, the
healthy call's longest audio gap, and the server's fds/threads/RSS before and after.
The same cases, fewer of them, run in CI as tests/test_chaos.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chaos_cases import TwilioCase, twilio_cases, upstream_frames  # noqa: E402
from chaos_harness import NUMBERS, ChaosUpstream, GoodCall, Lab, ServeProcess, profiles_toml  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="hostile Twilio frames")
    parser.add_argument("--upstream-examples", type=int, default=30, help="hostile model event sequences (about 1.5 s each)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    # The test module's case runners, reused as they are.
    import test_chaos as suite

    work = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    (work / "profiles.toml").write_text(profiles_toml())
    lab = Lab()
    upstream = ChaosUpstream()
    lab.run(upstream.start())
    server = ServeProcess(work, {
        "VOICE_BRIDGE_UPSTREAM_URL": upstream.url, "VOICE_BRIDGE_PROFILES": str(work / "profiles.toml"),
        "VOICE_BRIDGE_MAX_CALLS": "30", "VOICE_BRIDGE_RECORD_DIR": str(work / "recordings"),
    }, name="chaos-bench")
    server.wait_healthy()
    healthy = lab.run(GoodCall(server.url, NUMBERS["talker"]).start())
    bed = suite.Bed(lab, upstream, server, healthy, work / "recordings")
    for _ in range(3):
        lab.run(suite._one_refused_case(server.url))
    time.sleep(1.0)
    before = server.resources()
    started = time.monotonic()
    tally: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    examples: dict[str, str] = {}

    def record(family: str, error: BaseException | None) -> None:
        tally[family] += 1
        if error is not None:
            failed[family] += 1
            examples.setdefault(family, str(error).splitlines()[0][:300])

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=twilio_cases())
    def twilio(case: TwilioCase) -> None:
        try:
            suite.test_fuzzed_media_stream_frames_get_their_close_code_and_nothing_else.hypothesis.inner_test(bed, case)
        except AssertionError as exc:
            record(f"twilio: {case.label}", exc)
            return
        record(f"twilio: {case.label}", None)

    @seed(args.seed)
    @settings(max_examples=args.upstream_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(frames=upstream_frames())
    def model(frames: list[str | bytes]) -> None:
        try:
            suite.test_fuzzed_upstream_events_mid_call_are_skipped_and_the_call_goes_on.hypothesis.inner_test(bed, frames)
        except AssertionError as exc:
            record("model: events mid-call", exc)
            return
        record("model: events mid-call", None)

    try:
        twilio()
        if args.upstream_examples:
            model()
        time.sleep(2.0)
        after = server.resources()
    finally:
        lab.run(healthy.hang_up())
        server.stop()
        lab.run(upstream.stop())
        lab.close()

    print(f"{'family':<34} {'cases':>6} {'failed':>6}")
    for family in sorted(tally):
        print(f"{family:<34} {tally[family]:>6} {failed[family]:>6}")
    for family, text in examples.items():
        print(f"  first failure, {family}: {text}")
    result = {
        "cases": sum(tally.values()), "failures": sum(failed.values()), "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "healthy_max_gap_s": round(bed.figures.get("healthy_max_gap_s", 0.0), 3),
        "before": before, "after": after, "log_exceptions": len(server.forbidden_since(0)),
    }
    print(json.dumps(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    random.seed(0)
    raise SystemExit(main())
