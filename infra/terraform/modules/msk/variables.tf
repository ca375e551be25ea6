variable "name" {
  description = "Cluster name."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "One private subnet per AZ: MSK places one broker in each."
  type        = list(string)
}

variable "client_cidr_block" {
  description = "Where Kafka clients connect from (the VPC)."
  type        = string
}

variable "kafka_version" {
  description = "MSK Kafka version; tiered storage needs 3.6 or later."
  type        = string
}

variable "broker_count" {
  description = "Brokers: a multiple of the three AZs."
  type        = number
  validation {
    condition     = var.broker_count % 3 == 0
    error_message = "broker_count must be a multiple of 3 (one broker per AZ, replication factor 3)."
  }
}

variable "broker_instance_type" {
  description = "Broker size (docs/CAPACITY.md: ingress, replication and consumer egress per broker)."
  type        = string
}

variable "broker_volume_gib" {
  description = "Local (hot) storage per broker; older segments live in tiered storage."
  type        = number
}

variable "broker_volume_throughput_mibps" {
  description = "Provisioned EBS throughput per broker (MiB/s)."
  type        = number
}

variable "kms_key_arn" {
  description = "KMS key for data at rest."
  type        = string
}

variable "logs_kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}

variable "scram_secret_arns" {
  description = "Secrets Manager ARNs (AmazonMSK_*) of the SCRAM users, created outside Terraform."
  type        = list(string)
  default     = []
}
