"""Amazon's report weeks: Sunday to Saturday."""

import dagster as dg

# Brand Analytics weeks start on Sunday (day_offset=0 counts from Sunday in Dagster).
# The first week floodgate knows of; earlier weeks are out of Amazon's retention anyway.
FIRST_REPORT_WEEK = "2023-01-01"  # a Sunday

search_terms_weeks = dg.WeeklyPartitionsDefinition(start_date=FIRST_REPORT_WEEK, day_offset=0)
