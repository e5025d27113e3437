"""Expectation suites of the validation gate, one module per dataset, defined as code.

Each dataset module (``suites/<dataset>.py``) exposes ``build_suites(day) -> dict[table, ExpectationSuite]``
giving one Great Expectations suite per landed table of that day (the suites pin the partition's date, so
they are built per day). :func:`airflow_mlops.validation.build_suites` imports the module of a dataset
(and with it Great Expectations) only when its suites are asked for.
"""
