"""The code location: one Definitions object, the environment switch, jobs, sensors, schedules."""
