variable "region" {
  description = "AWS region of this deployment (eu-west-1 or us-east-1: one tfvars file each)."
  type        = string
  validation {
    condition     = contains(["eu-west-1", "us-east-1"], var.region)
    error_message = "region must be eu-west-1 or us-east-1 (the regions the platform serves)."
  }
}

variable "name" {
  description = "Prefix of every name; includes the region because IAM names are account-wide."
  type        = string
}

variable "az_ids" {
  description = "The three AZ IDs the platform spreads over."
  type        = list(string)
}

variable "vpc_cidr_block" {
  type = string
}

variable "bucket_prefix" {
  description = "S3 bucket name prefix (bucket names are global)."
  type        = string
}

variable "log_retention_days" {
  description = "CloudWatch log retention: 400 days covers the 13 months the mission keeps."
  type        = number
  default     = 400
}

variable "lake_retention_days" {
  description = "13 months (MISSION): the raw archive's age expiry; Iceberg maintenance applies the same bound to tables."
  type        = number
  default     = 395
}

variable "kafka_version" {
  type    = string
  default = "3.9.x"
}

variable "msk_broker_instance_type" {
  type    = string
  default = "kafka.m7g.8xlarge"
}

variable "msk_broker_volume_gib" {
  type    = number
  default = 12288
}

variable "msk_broker_volume_throughput_mibps" {
  type    = number
  default = 625
}

variable "msk_scram_secret_arns" {
  description = "SCRAM users' secrets (AmazonMSK_*), made by the security team."
  type        = list(string)
  default     = []
}

variable "kubernetes_version" {
  type    = string
  default = "1.33"
}

variable "eks_node_groups" {
  description = "docs/CAPACITY.md: Flink TaskManagers, the context API fleet, system pods."
  type = map(object({
    instance_type = string
    min_size      = number
    max_size      = number
    dedicated     = bool
    local_nvme    = bool
  }))
  default = {
    system  = { instance_type = "m7g.large", min_size = 3, max_size = 6, dedicated = false, local_nvme = false }
    flink   = { instance_type = "m7gd.2xlarge", min_size = 12, max_size = 18, dedicated = true, local_nvme = true }
    serving = { instance_type = "c7g.4xlarge", min_size = 30, max_size = 96, dedicated = true, local_nvme = false }
  }
}

variable "flink_operator_chart_repository" {
  type    = string
  default = "https://downloads.apache.org/flink/flink-kubernetes-operator-1.13.0/"
}

variable "flink_operator_version" {
  type    = string
  default = "1.13.0"
}

variable "flink_version" {
  description = "The operator's FlinkVersion enum value matching the image (apache-flink 2.3)."
  type        = string
  default     = "v2_3"
}

variable "flink_image_tag" {
  description = "Tag of the streaming job image CI pushed to the Flink ECR repository."
  type        = string
}

variable "flink_parallelism" {
  description = "docs/CAPACITY.md: 96 slots (24 TaskManagers x 4) at 2,194 lines/s per slot."
  type        = number
  default     = 96
}

variable "emr_release_label" {
  type    = string
  default = "emr-7.12.0"
}

variable "emr_max_vcpu" {
  type    = number
  default = 800
}

variable "schema_registry_image_tag" {
  description = "Tag of the schema registry image (Confluent's plus the MSK IAM auth jar) CI pushed to its ECR repository."
  type        = string
}

variable "private_ca_arn" {
  description = "The company's private CA (ACM PCA) that issues the internal services' certificates; given at apply time (TF_VAR_private_ca_arn), like the Snowflake credentials."
  type        = string
  validation {
    condition     = can(regex("^arn:aws:acm-pca:", var.private_ca_arn))
    error_message = "private_ca_arn must be an ACM Private CA ARN (arn:aws:acm-pca:...)."
  }
}

variable "postgres_engine_version" {
  type    = string
  default = "16.8"
}

variable "postgres_instance_class" {
  description = "docs/CAPACITY.md (Aurora Postgres): profile writes, CDC decoding, key reads."
  type        = string
  default     = "db.r7g.xlarge"
}

variable "postgres_instance_count" {
  description = "A writer and a reader in another AZ."
  type        = number
  default     = 2
}

variable "postgres_max_slot_wal_keep_mb" {
  description = "docs/CAPACITY.md: a day of profile WAL; past it a stalled CDC slot is dropped, not the writer's disk."
  type        = number
  default     = 51200
}

variable "grafana_version" {
  type    = string
  default = "10.4"
}

variable "redis_node_type" {
  type    = string
  default = "cache.r7g.xlarge"
}

variable "redis_shards" {
  type    = number
  default = 24
}

variable "opensearch_data_instance_type" {
  type    = string
  default = "r7g.2xlarge.search"
}

variable "opensearch_data_node_count" {
  type    = number
  default = 6
}

variable "opensearch_master_instance_type" {
  type    = string
  default = "m7g.large.search"
}

variable "mwaa_airflow_version" {
  description = "Newest Airflow 3 MWAA offers; the DAGs are tested locally on 3.3 (README: gaps)."
  type        = string
  default     = "3.0.6"
}

variable "mwaa_environment_class" {
  type    = string
  default = "mw1.large"
}

variable "snowflake_admin_role" {
  description = "Snowflake role Terraform runs as (creates roles, grants, policies)."
  type        = string
  default     = "SECURITYADMIN"
}
