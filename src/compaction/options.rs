//! Spark-compatible `rewrite_data_files` options: names, defaults and validation.
