"""One interface per external system, each with an embedded and a production implementation."""
