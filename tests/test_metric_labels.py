"""Every Prometheus label value in bridge/ and twiml/ comes from a fixed set (issue 13, class 7).

A label value chosen by a peer or by the model makes a new series for the life of the process, so
`.labels(...)` may only be given: a string literal, an enum's `.value`, `bounded_label(...)` (a
fixed set plus `other`), a module constant, a conditional of those, or one of the few reviewed names below, whose
values are string literals of our own code (checked here too).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "bridge").rglob("*.py"), *(ROOT / "twiml").rglob("*.py")])

# (file, expression): label values that are reasons our own code names with literals.
REVIEWED = {
    ("bridge/call/start.py", "reason"),  # reject(reason, ...): a literal or exc.reason (checked below)
    ("bridge/call/session.py", "exc.reason"),  # ProtocolError reasons: literals (checked below)
    ("bridge/call/upstream_link.py", "reason"),  # _dropped(reason, frames): literals (checked below)
    ("bridge/call/model_events.py", "stage"),  # TurnTimeline stages: turn_timeline.STAGES
    ("bridge/app.py", "reason"),  # _refuse_body(state, request, reason, ...): literals (body_too_large, body_timeout)
    ("bridge/serving.py", "reason"),
    # profile names: the operator's profile file (bounded by configuration), never a peer's value
    ("bridge/model_usage.py", "profile"),
    ("bridge/model_usage.py", "self.policy.profile"),  # guard.refused(reason, ...): literals (too_many_connections, header_timeout)
}
# Exceptions whose `reason` becomes a label: built with a literal (or passing another one's reason on).
REASON_CARRIERS = {"ProtocolError", "StreamTokenError", "StartRefused", "reject", "_dropped", "AdmissionRefused"}


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
                if called == name:
                    found.append((str(path.relative_to(ROOT)), node))
    return found


def _bounded(expr: ast.expr, where: str) -> bool:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return True
    if isinstance(expr, ast.Attribute) and expr.attr == "value":  # an enum member's value
        return True
    if isinstance(expr, ast.Name) and expr.id.isupper():  # a module constant (VOICE_PATH)
        return True
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "bounded_label":
        return True
    if isinstance(expr, ast.IfExp):
        return _bounded(expr.body, where) and _bounded(expr.orelse, where)
    if isinstance(expr, ast.BoolOp):
        return all(_bounded(v, where) for v in expr.values)
    return (where, ast.unparse(expr)) in REVIEWED


def test_every_label_value_is_from_a_fixed_set() -> None:
    calls = _calls("labels")
    assert len(calls) > 15  # the scan sees the code
    unbounded = [
        f"{where}:{call.lineno} {kw.arg}={ast.unparse(kw.value)}"
        for where, call in calls
        for kw in call.keywords
        if not _bounded(kw.value, where)
    ]
    assert unbounded == []


def test_reasons_that_become_labels_are_literals_of_our_own_code() -> None:
    loose = []
    for carrier in REASON_CARRIERS:
        for where, call in _calls(carrier):
            if not call.args:
                continue
            first = call.args[0]
            choices = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            literal = all(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in choices)
            passed_on = ast.unparse(first) == "exc.reason"
            if not (literal or passed_on):
                loose.append(f"{where}:{call.lineno} {carrier}({ast.unparse(first)})")
    assert loose == []
