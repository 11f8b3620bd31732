"""engine/memory.py: trimming malloc only once resident memory has grown."""

from engine.memory import GrowthTrim, resident_bytes


def test_resident_bytes_sees_memory_that_is_touched():
    before = resident_bytes()
    block = b"x" * (64 << 20)  # written, so resident
    assert resident_bytes() - before >= 60 << 20
    del block


def test_a_growth_trim_trims_only_past_its_slack():
    patient = GrowthTrim(slack=1 << 40)
    eager = GrowthTrim(slack=0)
    block = b"x" * (16 << 20)
    patient()
    eager()
    assert patient.trims == 0 and eager.trims == 1
    assert eager.floor >= resident_bytes() - (8 << 20)  # the floor moves to where the trim left it
    del block
