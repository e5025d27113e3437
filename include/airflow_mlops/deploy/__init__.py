"""Deploy targets behind one interface (:mod:`airflow_mlops.deploy.base`)."""
