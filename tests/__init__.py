"""Tests of airflow-mlops: unit, DAG integrity, integration, end to end; benchmarks."""
