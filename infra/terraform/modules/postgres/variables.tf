variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets, one per AZ."
  type        = list(string)
}

variable "availability_zones" {
  description = "The AZs of those subnets, in the same order: instance N goes to zone N mod 3."
  type        = list(string)
}

variable "client_cidr_block" {
  type = string
}

variable "engine_major_version" {
  type = string
}

variable "engine_version" {
  type = string
}

variable "instance_class" {
  type = string
}

variable "instance_count" {
  description = "Writer plus readers; at least 2, so a failover has somewhere to go in another AZ."
  type        = number
  validation {
    condition     = var.instance_count >= 2
    error_message = "instance_count must be at least 2 (a writer and a reader in another AZ)."
  }
}

variable "max_slot_wal_keep_mb" {
  description = "WAL a stalled CDC slot may hold before Postgres invalidates it (the pump then re-snapshots)."
  type        = number
}

variable "backup_retention_days" {
  type = number
}

variable "rotation_days" {
  description = "How often the service roles' passwords rotate."
  type        = number
}

variable "kms_key_arn" {
  description = "Encrypts the storage, Performance Insights and the secrets."
  type        = string
}

variable "logs_kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}
