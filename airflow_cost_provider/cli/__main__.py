"""`python -m airflow_cost_provider.cli`: the same as the `airflow-cost` command."""

import sys

from airflow_cost_provider.cli import main

sys.exit(main())
