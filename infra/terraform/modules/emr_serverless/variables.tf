variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "account_id" {
  type = string
}

variable "release_label" {
  description = "EMR release (its Spark version must run spark_jobs/)."
  type        = string
}

variable "max_vcpu" {
  description = "Ceiling of the application's workers (docs/BATCH.md: a full backfill on 800 vCPU takes ~12 h)."
  type        = number
}

variable "warm_executors" {
  description = "Pre-initialized executors (4 vCPU each) for quick starts of the daily runs."
  type        = number
}

variable "vpc_id" {
  type = string
}

variable "vpc_cidr_block" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "lake_bucket_arns" {
  description = "Buckets holding Iceberg warehouses the jobs read and write (lake, audit)."
  type        = list(string)
}

variable "artifacts_bucket_arn" {
  description = "Bucket of the jobs' code (mercury wheel, entry points) and logs."
  type        = string
}

variable "glue_database_arns" {
  type = list(string)
}

variable "glue_database_names" {
  type = list(string)
}

variable "kms_key_arns" {
  description = "Keys of the buckets and catalog the jobs touch."
  type        = list(string)
}

variable "secret_arns" {
  description = "Secrets Manager secrets the jobs read at start (config/production.yaml spark_submit.secrets); the job role may read these only."
  type        = list(string)
}

variable "secrets_kms_key_arns" {
  description = "The keys those secrets are encrypted with (decrypt through Secrets Manager only)."
  type        = list(string)
}
