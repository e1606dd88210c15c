"""mlops-ops in Airflow's UI: the Models view and the report pages (an Airflow plugin, FastAPI app)."""
