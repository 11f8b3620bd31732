"""The weekly search-terms pipeline: report → parsed rows → top 3 per term → warehouse table."""

import dagster as dg

from assets.search_terms.parse import parse_search_terms
from assets.search_terms.report import GROUP, search_terms_report
from assets.search_terms.warehouse_table import search_terms_top3_table

ASSETS = [search_terms_report, parse_search_terms, search_terms_top3_table]

# Steps run one after another where FLOODGATE_EXECUTOR says (orchestration/executors.py):
# in the run's own process by default, since each streams files the next one reads.
search_terms_job = dg.define_asset_job(
    "search_terms_weekly",
    selection=dg.AssetSelection.groups(GROUP),
    description="Load one week of Amazon Search Terms into the warehouse's top-3 table.",
)

defs = dg.Definitions(assets=ASSETS, jobs=[search_terms_job])
