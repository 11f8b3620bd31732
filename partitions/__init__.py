"""Partition definitions, shared by assets, sensors and schedules."""
