"""Progress logging, StepMeasure's seconds and peak memory."""

import mmap
import re

import pytest

from engine.measure import Progress, StepMeasure, human_bytes, peak_rss_bytes, reset_peak_rss, resident_bytes


class Log:
    def __init__(self):
        self.messages: list[str] = []

    def info(self, message: str) -> None:
        self.messages.append(message)


def test_interval_zero_logs_every_update():
    log = Log()
    p = Progress(log, "parsing", interval=0)
    for rows in (10, 20, 30):
        p.update(rows)
    assert len(log.messages) == 3
    assert p.reports == 3


def test_a_large_interval_stays_quiet_unless_forced():
    log = Log()
    p = Progress(log, "parsing", interval=3600)
    for rows in range(0, 10_000, 100):
        p.update(rows)
    assert log.messages == []
    assert p.reports == 0
    p.update(10_000, force=True)
    assert len(log.messages) == 1
    for rows in range(10_000, 20_000, 100):
        p.update(rows)  # the forced report restarted the interval: still quiet
    assert len(log.messages) == 1
    p.update(20_000, force=True)
    assert len(log.messages) == 2 and p.reports == 2


def test_message_has_rows_and_rate():
    log = Log()
    Progress(log, "parsing report.json", interval=0).update(1_234_567)
    (message,) = log.messages
    assert message.startswith("parsing report.json: ")
    assert "1,234,567 rows" in message
    assert re.search(r"[\d,]+ rows/s", message)
    assert "%" not in message and "ETA" not in message


def test_message_without_done_has_no_percentage():
    log = Log()
    p = Progress(log, "x", total=1000, interval=0)
    p.update(5)
    p.update(5, done=0)
    assert all("%" not in m and "ETA" not in m for m in log.messages)


@pytest.mark.parametrize("done, percent", [(250_000_000, "25%"), (1_000_000_000, "100%"), (2_000_000_000, "100%")])
def test_message_with_total_and_done_has_percentage_and_eta(done, percent):
    log = Log()
    Progress(log, "parsing", total=1_000_000_000, interval=0).update(500, done=done)
    (message,) = log.messages
    assert f"{percent} of 1.0 GB" in message
    eta = re.search(r"ETA ([\d,]+)s", message)
    assert eta is not None
    if percent == "100%":
        assert eta.group(1) == "0"


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1_500) == "1.5 KB"
    assert human_bytes(2_000_000) == "2.0 MB"
    assert human_bytes(3_000_000_000) == "3.0 GB"
    assert human_bytes(4_000_000_000_000) == "4000.0 GB"


def test_step_measure_records_seconds_and_peak_rss():
    with StepMeasure() as m:
        sum(range(10_000))
        current = resident_bytes()
    assert m.seconds > 0
    assert m.start_rss > 0
    assert m.peak_rss > 0
    assert m.peak_rss >= current
    assert m.rate(1000) == pytest.approx(1000 / m.seconds)
    assert StepMeasure().rate(10) == 0.0  # never ran


def test_stop_can_be_called_inside_the_block():
    with StepMeasure() as m:
        m.stop()
        first = m.seconds
    assert 0 < first <= m.seconds


def test_peak_rss_grows_with_a_touched_50mb_allocation():
    size = 50 << 20
    with StepMeasure() as m:
        block = bytearray(size)
        for i in range(0, size, 4096):  # touch every page
            block[i] = 1
        inside = resident_bytes()
    del block
    assert m.peak_rss >= m.start_rss + (40 << 20)
    assert m.peak_rss >= inside


def test_reset_starts_a_new_peak_window():
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    # an anonymous mapping, not a bytearray: whether malloc hands a freed block back to the
    # kernel depends on its thresholds, which other code in the process may have moved
    block = mmap.mmap(-1, 50 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    high = peak_rss_bytes()
    block.close()
    assert reset_peak_rss()
    assert peak_rss_bytes() <= high - (40 << 20)
