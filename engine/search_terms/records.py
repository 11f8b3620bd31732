"""The shape of a parsed Search Terms row, shared by the scanner, the Parquet files and the
warehouse."""

import pyarrow as pa

REPORT_TYPE = "GET_BRAND_ANALYTICS_SEARCH_TERMS_REPORT"
REPORT_PERIOD = "WEEK"
DATA_KEY = "dataByDepartmentAndSearchTerm"
SPEC_KEY = "reportSpecification"

# Column order matches the output order of record_scanner.c: strings first, then numbers.
PARSED_SCHEMA = pa.schema(
    [
        pa.field("department_name", pa.string(), nullable=False),
        pa.field("search_term", pa.string(), nullable=False),
        pa.field("clicked_asin", pa.string(), nullable=False),
        pa.field("clicked_item_name", pa.string()),
        pa.field("search_frequency_rank", pa.int64(), nullable=False),
        pa.field("click_share_rank", pa.int64(), nullable=False),
        pa.field("click_share", pa.float64(), nullable=False),
        pa.field("conversion_share", pa.float64(), nullable=False),
    ]
)

# The JSON name of each parsed column.
SOURCE_NAMES = {
    "department_name": "departmentName",
    "search_term": "searchTerm",
    "clicked_asin": "clickedAsin",
    "clicked_item_name": "clickedItemName",
    "search_frequency_rank": "searchFrequencyRank",
    "click_share_rank": "clickShareRank",
    "click_share": "clickShare",
    "conversion_share": "conversionShare",
}

TOP3_SCHEMA = pa.schema(
    [
        pa.field("week_start", pa.date32(), nullable=False),
        pa.field("marketplace_id", pa.string(), nullable=False),
        pa.field("department_name", pa.string(), nullable=False),
        pa.field("search_term", pa.string(), nullable=False),
        pa.field("search_frequency_rank", pa.int64(), nullable=False),
    ]
    + [
        field
        for rank in (1, 2, 3)
        for field in (
            pa.field(f"clicked_asin_{rank}", pa.string()),
            pa.field(f"clicked_item_name_{rank}", pa.string()),
            pa.field(f"click_share_{rank}", pa.float64()),
            pa.field(f"conversion_share_{rank}", pa.float64()),
        )
    ]
    + [
        pa.field("total_click_share", pa.float64(), nullable=False),
        pa.field("total_conversion_share", pa.float64(), nullable=False),
    ]
)
