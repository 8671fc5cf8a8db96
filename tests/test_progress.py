"""The stage clock: exclusive seconds per stage, rows adding up to the whole, nothing recorded without a clock."""

import pytest

import overspec.progress as progress
from overspec.progress import stage, stage_clock


class _FakeClocks:
    """CPU and wall clocks the test advances by hand (CPU runs at half the wall rate)."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def cpu(self) -> float:
        return self.now / 2

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clocks(monkeypatch):
    fake = _FakeClocks()
    monkeypatch.setattr(progress, "_cpu_seconds", fake.cpu)
    monkeypatch.setattr(progress.time, "perf_counter", fake.perf_counter)
    return fake


def test_nested_stages_are_booked_exclusively_and_add_up(clocks):
    with stage_clock() as clock:
        clocks.advance(1)  # outside any stage: "other"
        with stage("fine-tune"):
            clocks.advance(4)
            with stage("pretrain"):
                clocks.advance(10)
            clocks.advance(2)
        for _ in range(3):
            with stage("features"):
                clocks.advance(2)
        running = {row["stage"]: row for row in clock.table()}
        assert running["other"]["wall_s"] == 1.0  # a running stage counts with its time so far
    rows = {row["stage"]: row for row in clock.table()}
    assert {name: row["wall_s"] for name, row in rows.items()} == {"other": 1.0, "fine-tune": 6.0, "pretrain": 10.0,
                                                                    "features": 6.0}
    assert rows["pretrain"]["cpu_s"] == 5.0 and rows["features"]["count"] == 3
    assert [row["stage"] for row in clock.table()] == ["pretrain", "features", "fine-tune", "other"]
    assert clock.text().splitlines()[-1].split() == ["total", "11.5", "23.0"]


def test_stages_outside_a_clock_record_nothing(clocks):
    with stage("lonely"):
        clocks.advance(3)
    with stage_clock() as clock:
        pass
    assert [row["stage"] for row in clock.table()] == ["other"]


def test_a_workers_table_merges_into_a_clock_with_its_counts(clocks):
    with stage_clock() as worker:
        for _ in range(2):
            with stage("features"):
                clocks.advance(4)
    total = progress.StageClock()
    total.add("features", 1.0, 3.0)
    total.merge(worker.table())
    total.merge(worker.table())
    rows = {row["stage"]: row for row in total.table()}
    assert rows["features"] == {"stage": "features", "cpu_s": 9.0, "wall_s": 19.0, "count": 5}
    assert rows["other"]["count"] == 2
