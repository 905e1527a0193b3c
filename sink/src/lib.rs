//! The sink stage: run history into ScyllaDB/Cassandra and Parquet (issue 7).
