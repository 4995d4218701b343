"""Where images come from (sources), how they are stored (shards), how views are made."""
