//! Reading file groups from the starting snapshot (deletes applied) and writing them as target-size Parquet files.
