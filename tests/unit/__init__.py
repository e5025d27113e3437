"""Unit tests of the library: no Airflow, no servers (the S3 tests use moto, and say why)."""
