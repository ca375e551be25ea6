variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "airflow_version" {
  description = "MWAA's Airflow version (the DAGs are written for Airflow 3)."
  type        = string
}

variable "environment_class" {
  type = string
}

variable "min_workers" {
  type = number
}

variable "max_workers" {
  type = number
}

variable "parallelism" {
  description = "config: airflow.parallelism (tasks at once over all workers)."
  type        = number
}

variable "vpc_id" {
  type = string
}

variable "vpc_cidr_block" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets; MWAA takes the first two."
  type        = list(string)
}

variable "artifacts_bucket_arn" {
  description = "Bucket holding mwaa/dags (and the Spark jobs' code under spark/)."
  type        = string
}

variable "kms_key_arn" {
  description = "The environment's key (its metadata database, queue and logs)."
  type        = string
}

variable "emr_application_arn" {
  type = string
}

variable "emr_job_role_arn" {
  type = string
}

variable "secrets_prefix" {
  description = "Secrets Manager name prefix of the Airflow connections and variables."
  type        = string
}

variable "secrets_kms_key_arn" {
  type = string
}

variable "table_prefix_arns" {
  description = "S3 ARNs (bucket/prefix) of the Iceberg tables tasks on the workers write."
  type        = list(string)
}

variable "glue_database_names" {
  description = "Glue databases of those tables."
  type        = list(string)
}

variable "table_kms_key_arns" {
  type = list(string)
}

variable "alertmanager_workspace_arn" {
  description = "The Managed Prometheus workspace whose Alertmanager takes Airflow's failure pages."
  type        = string
}
