"""engine/memory.py: trimming malloc only once resident memory has grown."""

from engine.measure import resident_bytes
from engine.memory import GrowthTrim


def test_resident_bytes_sees_memory_that_is_touched():
    before = resident_bytes()
    block = b"x" * (64 << 20)  # written, so resident
    assert resident_bytes() - before >= 60 << 20
    del block


def test_a_growth_trim_trims_only_past_its_slack():
    # the floors are set by hand: whether a fresh allocation raises RSS depends on what
    # malloc already holds free in this (long-lived test) process
    patient, eager = GrowthTrim(slack=1 << 30), GrowthTrim(slack=1 << 20)
    patient.floor = eager.floor = resident_bytes() - (2 << 20)  # 2 MiB of growth since the last trim
    patient()
    eager()
    assert patient.trims == 0 and eager.trims == 1
    assert eager.floor >= resident_bytes() - (1 << 20)  # the floor moves to where the trim left it
    eager()
    assert eager.trims == 1  # no growth since: no second trim
