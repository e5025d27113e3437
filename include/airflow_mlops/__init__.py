"""airflow-mlops: the library behind the DAGs."""
