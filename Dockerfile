# The official Airflow image with airflow-cost-provider installed from this checkout, for
# docker-compose.yaml. Airflow 3.3.2 on Python 3.12 (the project supports Python 3.10 to 3.13).
FROM apache/airflow:3.3.2-python3.12

# Only what the package build needs (see .dockerignore), so that editing DAGs or tests does not
# invalidate this layer.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow-cost-provider/
COPY --chown=airflow:0 airflow_cost_provider /opt/airflow-cost-provider/airflow_cost_provider

# Pinning apache-airflow to the image's own version keeps pip from upgrading or downgrading Airflow
# while it resolves the provider extras the example DAGs import.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "/opt/airflow-cost-provider[amazon,google,microsoft-azure,databricks,snowflake,postgres,mysql,trino]"
