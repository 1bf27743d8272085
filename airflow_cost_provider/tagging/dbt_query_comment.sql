{#-
  The query comment of airflow-cost-provider: the dbt node's unique id and the Airflow task try that
  runs dbt, in the sqlcommenter format the provider tags every other statement with (keys sorted,
  keys and values URL-encoded). dbt puts it between `/* ` and ` */`, on a line of its own after the
  statement when `append: true`.

  Copy this file into your project's macros/ and set, in dbt_project.yml:

    query-comment:
      comment: "{{ cost_provider_query_comment(node) }}"
      append: true

  Airflow gives a BashOperator's command AIRFLOW_CTX_DAG_ID, AIRFLOW_CTX_TASK_ID,
  AIRFLOW_CTX_DAG_RUN_ID and AIRFLOW_CTX_TRY_NUMBER. The map index is AIRFLOW_CTX_MAP_INDEX when set
  (a mapped task sets it itself), else -1. The OpenLineage run id is OPENLINEAGE_RUN_ID, else the
  last part of OPENLINEAGE_PARENT_ID (`namespace/job/run id`, as the OpenLineage dbt integration
  takes it). Outside Airflow only the dbt keys are written.
-#}
{% macro cost_provider_query_comment(node) -%}
  {%- set tags = cost_provider_identity(node) -%}
  {%- set pairs = [] -%}
  {%- for key, value in tags | dictsort(case_sensitive=true) if value -%}
    {%- do pairs.append(cost_provider_url_encode(key) ~ "='" ~ cost_provider_url_encode(value) ~ "'") -%}
  {%- endfor -%}
  {{- pairs | join(',') -}}
{%- endmacro %}

{#- The identity both carriers hold: the Airflow task try (when Airflow runs dbt) and the dbt node. -#}
{% macro cost_provider_identity(node) -%}
  {%- set tags = {} -%}
  {%- set dag_id = env_var('AIRFLOW_CTX_DAG_ID', '') -%}
  {%- if dag_id -%}
    {%- do tags.update({
      'airflow_dag_id': dag_id,
      'airflow_task_id': env_var('AIRFLOW_CTX_TASK_ID', ''),
      'airflow_run_id': env_var('AIRFLOW_CTX_DAG_RUN_ID', ''),
      'airflow_try_number': env_var('AIRFLOW_CTX_TRY_NUMBER', ''),
      'airflow_map_index': env_var('AIRFLOW_CTX_MAP_INDEX', '-1'),
    }) -%}
  {%- endif -%}
  {%- set openlineage_run_id = env_var('OPENLINEAGE_RUN_ID', '') or env_var('OPENLINEAGE_PARENT_ID', '').split('/')[-1] -%}
  {%- if openlineage_run_id -%}
    {%- do tags.update({'openlineage_run_id': openlineage_run_id}) -%}
  {%- endif -%}
  {%- if node and node.unique_id -%}
    {%- do tags.update({'dbt_unique_id': node.unique_id}) -%}
  {%- endif -%}
  {%- if invocation_id -%}
    {%- do tags.update({'dbt_invocation_id': invocation_id}) -%}
  {%- endif -%}
  {{- return(tags) -}}
{%- endmacro %}

{#-
  The same identity as BigQuery job labels, for a BigQuery project: a JSON object, which dbt-bigquery
  turns into the job's labels when the query comment sets `job-label: true`. Keys and values are
  already valid labels (lowercase letters, digits, `_` and `-`, at most 63 characters; a longer value
  keeps its first 54 characters and an MD5 digest of the whole), the same labels the provider puts on
  the BigQuery jobs Airflow's hooks start, so `openlineage_run_id` joins the bill to the task try.

    query-comment:
      comment: "{{ cost_provider_job_labels(node) }}"
      job-label: true
      append: true
-#}
{% macro cost_provider_job_labels(node) -%}
  {%- set labels = {} -%}
  {%- for key, value in cost_provider_identity(node).items() if value -%}
    {%- do labels.update({cost_provider_label(key): cost_provider_label(value)}) -%}
  {%- endfor -%}
  {{- tojson(labels, sort_keys=true) -}}
{%- endmacro %}

{#- A BigQuery label key or value: lowercase, anything but a-z 0-9 _ - as `_`, at most 63 characters. -#}
{% macro cost_provider_label(text) -%}
  {%- set cleaned = modules.re.sub('[^a-z0-9_-]', '_', (text | string).lower()) -%}
  {%- if cleaned | length <= 63 -%}
    {{- cleaned -}}
  {%- else -%}
    {{- cleaned[:54] ~ '-' ~ local_md5(text | string)[:8] -}}
  {%- endif -%}
{%- endmacro %}

{#- Python's urllib.parse.quote(text, safe=''): every byte but A-Z a-z 0-9 _ . - ~ as %XX (UTF-8). -#}
{% macro cost_provider_url_encode(text) -%}
  {%- for character in (text | string) -%}
    {%- if modules.re.fullmatch('[A-Za-z0-9_.~-]', character) -%}
      {{- character -}}
    {%- else -%}
      {{- modules.re.sub('(..)', '%\\1', character.encode('utf-8').hex().upper()) -}}
    {%- endif -%}
  {%- endfor -%}
{%- endmacro %}
