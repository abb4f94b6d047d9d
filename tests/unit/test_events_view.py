"""`resplit events`'s table: a long plan or reason must not break a trigger's line."""

from __future__ import annotations

from rich.console import Console

from resplit.cli.control import events_view
from resplit.v1 import common_pb2


def _event() -> common_pb2.DecisionEvent:
    event = common_pb2.DecisionEvent(
        timestamp=1000.0,
        outcome=common_pb2.DECISION_OUTCOME_KEEP,
        reason="splitter unavailable: " + "a long explanation of what failed and why " * 8,
        measured_latency_ms=68.85,
    )
    event.triggers.add(name="latency", value=68.85, threshold=0.001)
    event.triggers.add(name="bandwidth", subject="edge-1->cloud-1", value=3.2, threshold=10)
    event.chosen.epoch = 7
    for start in range(0, 40, 4):
        event.chosen.segments.add(
            units=common_pb2.UnitRange(start=start, end=start + 4), node_id=f"worker-with-a-long-name-{start}"
        )
    return event


def test_triggers_stay_on_one_line_beside_a_long_reason_and_plan():
    for width in (120, 200, 400):
        console = Console(record=True, width=width)
        console.print(events_view("chat", [_event()]))
        text = console.export_text()
        assert "latency 68.85 > 0.001" in text, (width, text)
        assert "bandwidth edge-1->cloud-1 3.2 < 10" in text, (width, text)
        assert "keep" in text and "68.8 ms" in text


def test_a_change_shows_the_prediction_of_the_measured_signal_and_its_error():
    event = common_pb2.DecisionEvent(
        timestamp=1000.0,
        outcome=common_pb2.DECISION_OUTCOME_MIGRATE,
        reason="Phi 300 -> 200",
        measured_latency_ms=60.0,
        latency_signal="ttft",
    )
    event.triggers.add(name="latency", subject="ttft", value=180.0, threshold=150)
    event.chosen.epoch = 3
    event.chosen.segments.add(units=common_pb2.UnitRange(start=0, end=8), node_id="edge")
    event.chosen.predicted.latency_ms, event.chosen.predicted.prefill_ms = 700.0, 50.0
    console = Console(record=True, width=300)
    console.print(events_view("chat", [event]))
    text = console.export_text()
    assert "latency ttft 180 > 150" in text
    assert "ttft" in text and "50 ms" in text and "60 ms" in text and "+20%" in text, text
    assert "700" not in text  # the whole request's L is not what TTFT is compared with
