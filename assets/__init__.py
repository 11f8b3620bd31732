"""Software-defined assets, one subpackage per pipeline."""
