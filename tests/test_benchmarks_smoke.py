"""The benchmark harness on synthetic numbers: statistics, goals, JSON and Markdown (fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import (
    Figure,
    Goal,
    Run,
    Stats,
    machine_description,
    pairwise_ratios,
    percentile,
    render_markdown,
    repeat,
    write_results,
)


def test_percentile_interpolates_between_ranks() -> None:
    samples = [float(value) for value in range(1, 101)]  # 1..100

    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_stats_are_median_min_max_and_optional_p99() -> None:
    stats = Stats.of([3.0, 1.0, 2.0, 10.0])

    assert (stats.n, stats.median, stats.min, stats.max, stats.p99) == (4, 2.5, 1.0, 10.0, None)
    assert Stats.of([1.0, 2.0, 3.0], with_p99=True).p99 == pytest.approx(2.98)


def test_ratios_pair_each_repetition() -> None:
    assert pairwise_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]
    with pytest.raises(ValueError, match="same length"):
        pairwise_ratios([1.0], [1.0, 2.0])


def test_repeat_calls_the_measure_that_many_times() -> None:
    values = iter([1.0, 2.0, 3.0])
    assert repeat(3, lambda: next(values)) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="times"):
        repeat(0, lambda: 1.0)


def test_goals_judge_the_median_of_a_ratio_and_the_p99_of_a_latency() -> None:
    figure = Figure("9", "Synthetic")
    figure.ratio("fast enough", "app", "floor", [0.7, 0.9, 1.1], goal=Goal(">=", 0.8))
    figure.metric(
        "latency", "ms", [10.0] * 98 + [400.0, 500.0], with_p99=True, goal=Goal("<=", 250)
    )

    assert figure.ratios[0].goal_met is True  # median 0.9
    assert figure.metrics[0].judged_value > 250  # p99, although the median is 10
    assert figure.metrics[0].goal_met is False
    assert figure.goals_met is False


def test_a_figure_without_goals_has_no_verdict_and_an_error_fails_it() -> None:
    assert Figure("9", "No goals", metrics=[]).goals_met is None
    assert Figure("9", "Broken", error="RuntimeError: boom").goals_met is False


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    figure = Figure("9", "Synthetic | piped", parameters={"repeats": 3})
    figure.metric("app", "ms", [12.0, 10.0, 11.0])
    figure.metric("floor", "ms", [5.0, 5.5, 6.0])
    figure.ratio("app ÷ floor", "app", "floor", [2.4, 1.8, 1.83], goal=Goal("<=", 2.0))
    figure.notes.append("a note")
    figure.profile.append("  something   12.0 ms")
    run = Run(machine=machine_description(), options={"quick": True}, figures=[figure])

    write_results(run, json_path=tmp_path / "results.json", markdown_path=tmp_path / "B.md")

    data = json.loads((tmp_path / "results.json").read_text())
    ratio = data["figures"]["9"]["ratios"]["app ÷ floor"]
    assert (ratio["median"], ratio["min"], ratio["max"]) == (1.83, 1.8, 2.4)
    assert ratio["goal"] == "<= 2"
    assert ratio["goal_met"] is True
    assert data["figures"]["9"]["metrics"]["app"]["median"] == 11.0
    for key in ("cpu_model", "logical_cores", "memory_gib", "python", "date"):
        assert data["machine"][key]
    markdown = (tmp_path / "B.md").read_text()
    assert "| 9 | app ÷ floor | 1.83 | 1.80–2.40 | <= 2 | met |" in markdown
    assert "Synthetic \\| piped" not in markdown.split("## 9.")[0]
    assert "a note" in markdown
    assert "something" in markdown
    assert render_markdown(run) == markdown


def test_floor_messages_are_job_sized_and_name_their_recording() -> None:
    from benchmarks.floors import job_sized, location_of

    message = job_sized("http://127.0.0.1:1/recordings/abc")

    assert location_of(message) == "http://127.0.0.1:1/recordings/abc"
    assert 600 <= len(message) <= 700  # as large as a download job on the queue


async def test_closed_loop_keeps_at_most_sixteen_in_flight_and_times_each_item() -> None:
    import asyncio

    from benchmarks.end_to_end import CONCURRENCY, closed_loop
    from benchmarks.rig import Recording

    items = [Recording(f"loc-{index}", "token", 1, "sha", str(index)) for index in range(40)]
    queue: asyncio.Queue[Recording] = asyncio.Queue()
    in_flight = 0
    most = 0

    async def arrive(item: Recording) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await queue.put(item)

    async def take() -> Any:
        if queue.empty():
            return None
        item = queue.get_nowait()

        async def work() -> None:
            nonlocal in_flight
            await asyncio.sleep(0)
            in_flight -= 1

        return item, work

    latencies, wall = await closed_loop(items, arrive=arrive, take=take, deadline_seconds=30)

    assert len(latencies) == len(items)
    assert all(latency >= 0 for latency in latencies)
    assert 1 < most <= CONCURRENCY
    assert wall >= max(latencies)


def test_every_figure_is_registered_with_a_run_function() -> None:
    import importlib

    from benchmarks.__main__ import FIGURES

    assert sorted(FIGURES, key=int) == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    assert FIGURES["6"] == "benchmarks.transcription"
    assert [FIGURES[key] for key in "789"] == [
        "benchmarks.scale_out",
        "benchmarks.throttling",
        "benchmarks.cost",
    ]
    assert FIGURES["10"] == "benchmarks.events"
    assert FIGURES["11"] == "benchmarks.recordings_list"
    for module in FIGURES.values():
        assert callable(importlib.import_module(module).run)


async def test_the_transcription_floor_posts_the_apps_multipart_body() -> None:
    import email.policy
    from email.message import EmailMessage
    from email.parser import BytesParser

    from benchmarks.transcription import floor_body
    from devtools.graphsim.recordings import wav_header

    audio = wav_header(3200) + bytes(range(256)) * 12 + bytes(128)

    body, kind = await floor_body(audio, ("en-US",))

    parser = BytesParser(EmailMessage, policy=email.policy.HTTP)
    message = parser.parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + body)
    parts = {
        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
    }
    assert list(parts) == ["definition", "audio"]
    assert json.loads(parts["definition"].get_content()) == {"locales": ["en-US"]}
    assert parts["audio"].get_content_type() == "audio/wav"
    assert parts["audio"].get_content() == audio


# --------------------------------------------------------------------------- capacity (7, 8, 9)


@pytest.fixture(scope="module")
def capacity_rig() -> Any:
    from benchmarks.rig import Rig, quiet_logs

    with Rig() as rig, quiet_logs():
        yield rig


@pytest.mark.timeout(300)
def test_several_instances_store_each_recording_once_in_a_tiny_burst(capacity_rig: Any) -> None:
    from benchmarks.scale_out import tiny

    figure = tiny(capacity_rig)

    assert figure.error is None
    metrics = {metric.name: metric for metric in figure.metrics}
    for processes in ("1 process", "2 processes"):
        assert metrics[f"lost recordings, {processes}"].samples == [0]
        assert metrics[f"recordings per second, {processes}"].samples[0] > 0
    assert [ratio.name for ratio in figure.ratios] == ["recordings per second, 2 processes ÷ 1"]


@pytest.mark.timeout(300)
def test_throttled_calls_are_counted_and_every_request_is_accounted_for(capacity_rig: Any) -> None:
    from benchmarks.throttling import tiny

    figure = tiny(capacity_rig)

    assert figure.error is None
    metrics = {metric.name: metric.samples[0] for metric in figure.metrics}
    assert metrics["calls placed"] >= 1
    assert metrics["calls-API requests sent"] >= metrics["calls placed"]
    assert metrics["of which refused (429)"] >= 0
    assert any(note.startswith("What became of the") for note in figure.notes)


@pytest.mark.timeout(300)
def test_the_cost_figure_prices_every_measured_quantity(capacity_rig: Any) -> None:
    from benchmarks.cost import tiny

    figure = tiny(capacity_rig)

    costs = [m for m in figure.metrics if m.name.startswith("cost per 1 000 recordings")]
    assert len(costs) == 8
    assert all(m.samples[0] >= 0 for m in costs)
    requests = next(m for m in figure.metrics if m.name.startswith("storage requests per rec"))
    assert requests.samples[0] >= 6


@pytest.mark.timeout(300)
def test_the_recordings_list_figure_pages_both_tables_and_counts_the_index_rows(
    capacity_rig: Any,
) -> None:
    from benchmarks.recordings_list import PAGES, TINY_SIZES, tiny

    # Seeding checks every built row against the ledger's own and every page against what was
    # seeded: a mismatch raises.
    figure = tiny(capacity_rig)

    assert figure.error is None
    metrics = {metric.name: metric.samples for metric in figure.metrics}
    small, large = TINY_SIZES
    for page in PAGES:
        for size in TINY_SIZES:
            assert metrics[f"{page}, {size} recordings: storage requests"][0] > 50
    # The caller index: the same calls of the same caller whatever else the table holds.
    caller = [metrics[f"one caller, {size} recordings: storage requests"][0] for size in TINY_SIZES]
    assert caller[0] == caller[1]
    judged = {ratio.name for ratio in figure.ratios if ratio.goal is not None}
    assert judged == {
        f"{page}: {what}, {large} ÷ {small}"
        for page in PAGES
        for what in ("storage requests", "time")
    }
    # One time index row per recording; who called is captured once per call.
    assert metrics["index rows' requests per recording"] == [1, 1]
    assert metrics["capture of who called, per call"][0] >= 2


def test_table_requests_are_classified_by_the_ledger_rows_they_touch() -> None:
    from azure.core.pipeline.transport import HttpRequest

    from benchmarks.rig import ledger_rows

    base = "http://127.0.0.1:1/devstoreaccount1/ops"

    def touched(method: str, url: str, body: str | bytes | None = None) -> str | None:
        request = HttpRequest(method, url)
        if body is not None:
            request.data = body
        return ledger_rows("table", request)

    guarded = (
        f"{base}()?$filter=PartitionKey%20eq%20%27c1%27%20and%20(%20RowKey%20eq%20%27op1%27"
        "%20or%20RowKey%20eq%20%27~call%27%20)"
    )
    assert touched("GET", guarded) == "call row+operation"
    assert touched("GET", f"{base}(PartitionKey='c1',RowKey='op1')") == "operation"
    assert touched("GET", f"{base}()?$filter=PartitionKey eq 'c1' and Kind eq 'operation'") == (
        "operation"
    )
    assert touched("PUT", f"{base}(PartitionKey='~time~2025010112',RowKey='9~c1~op1')") == (
        "time index"
    )
    assert touched("PATCH", f"{base}(PartitionKey='~caller~ab12',RowKey='c1')") == "caller index"
    assert touched("POST", base, '{"PartitionKey": "c1", "RowKey": "~call"}') == "call row"
    assert touched("POST", base, '{"PartitionKey": "~audit~c1", "RowKey": "x"}') == "audit"
    batch = (
        b"POST http://127.0.0.1:1/devstoreaccount1/ops HTTP/1.1\r\n\r\n"
        b'{"PartitionKey": "c1", "RowKey": "op1"}\r\n'
        b"PATCH http://127.0.0.1:1/devstoreaccount1/ops(PartitionKey='c1',RowKey='~call')"
    )
    assert touched("POST", "http://127.0.0.1:1/devstoreaccount1/$batch", batch) == (
        "call row+operation"
    )
    assert touched("GET", f"{base}()?$filter=UpdatedAt lt datetime'2025-01-01'") == "other"
    assert ledger_rows("blob", HttpRequest("PUT", "http://127.0.0.1:2/c/b")) is None


def test_prices_turn_quantities_into_a_cost_per_thousand() -> None:
    from benchmarks.prices import Quantities, always_ready_monthly, per_thousand

    lines = per_thousand(
        Quantities(
            executions=2,
            alone_seconds=0.1,
            busy_seconds=0.05,
            blob_writes=1,
            blob_other=0,
            queue_requests=3,
            table_requests=3,
            stored_bytes=3_840_000,
            audio_seconds=120,
        )
    )

    by_item = {line.item: line.usd for line in lines}
    assert by_item["Flex execution, one recording at a time"] == pytest.approx(
        1000 * 0.1 * 2 * 0.000026
    )
    assert by_item["Flex executions"] == pytest.approx(0.0008)
    assert all(line.price_source for line in lines)
    assert always_ready_monthly(2) == pytest.approx(2 * 2 * 730 * 3600 * 0.000004)


def test_committing_some_figures_keeps_the_others_numbers_rows_and_sections(
    tmp_path: Path,
) -> None:
    from benchmarks.harness import merge_results

    old, later, new = Figure("1", "Old one"), Figure("10", "Later one"), Figure("7", "New one")
    old.metric("kept", "ms", [1.0], goal=Goal("<=", 2))
    later.metric("after", "ms", [5.0], goal=Goal("<=", 6))
    new.metric("fresh", "ms", [3.0], goal=Goal("<=", 4))
    paths = {"json_path": tmp_path / "results.json", "markdown_path": tmp_path / "B.md"}
    analysis = tmp_path / "analysis.md"
    analysis.write_text("## What dominates\n\n- figure 1: the old reading\n")
    write_results(
        Run(machine={"date": "then"}, options={}, figures=[old, later]), **paths, analysis=analysis
    )
    analysis.write_text("## What dominates\n\n- figure 7: the new reading\n")

    for _ in range(2):
        fresh = Run(machine={"date": "now"}, options={"quick": False}, figures=[new])
        merge_results(fresh, **paths, analysis=analysis)

    data = json.loads(paths["json_path"].read_text())
    assert set(data["figures"]) == {"1", "7", "10"}
    assert data["machine"]["date"] == "then"
    assert data["figures"]["7"]["machine"]["date"] == "now"
    markdown = paths["markdown_path"].read_text()
    assert markdown.count("| 7 | fresh (median, ms) |") == 1
    assert markdown.count("## 7. New one") == 1
    assert "## 1. Old one" in markdown
    assert "| 1 | kept (median, ms) |" in markdown
    summary = markdown.split("## 1. Old one")[0]
    assert summary.index("| 1 | kept") < summary.index("| 7 | fresh")
    # The hand-kept analysis is the file's as it is now, once, between the summary and figure 1.
    assert "the old reading" not in markdown
    assert markdown.count("- figure 7: the new reading") == 1
    assert summary.index("| 7 | fresh") < summary.index("## What dominates")
    # Rows and sections in the figures' order, whichever run each comes from.
    assert summary.index("| 7 | fresh") < summary.index("| 10 | after")
    assert markdown.index("## 1. Old one") < markdown.index("## 7. New one")
    assert markdown.index("## 7. New one") < markdown.index("## 10. Later one")
    assert markdown.count("## 10. Later one") == 1
    # The machine section no longer names one run's commit and date for every figure.
    machine = markdown.split("## Machine")[1].split("## Summary")[0]
    assert "- Commit:" not in machine
    assert "each figure's section names its own" in machine
