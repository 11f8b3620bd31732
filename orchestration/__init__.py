"""The code location: one Definitions object, the environment switch, jobs, sensors, schedules."""

# Imported first, before any module of the code location imports pyarrow: it chooses
# Arrow's allocator, which is fixed at Arrow's first allocation (engine/memory.py).
import engine  # noqa: F401
