"""Mercury's Airflow hooks and operators. Airflow puts the plugins folder on sys.path, so DAGs
import them as ``mercury_airflow.hooks...`` / ``mercury_airflow.operators...``. They stay thin:
the logic they call lives in ``mercury``."""
