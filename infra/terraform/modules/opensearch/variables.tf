variable "name" {
  description = "Domain name (config: retrieval.index.hosts is its VPC endpoint)."
  type        = string
}

variable "region" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "One private subnet per AZ (zone awareness over three)."
  type        = list(string)
}

variable "client_cidr_block" {
  type = string
}

variable "engine_version" {
  description = "OpenSearch version; the kNN query's method_parameters need 2.16 or later."
  type        = string
}

variable "data_instance_type" {
  type = string
}

variable "data_node_count" {
  description = "Data nodes: a multiple of 3 (zone awareness over three AZs)."
  type        = number
  validation {
    condition     = var.data_node_count % 3 == 0
    error_message = "data_node_count must be a multiple of 3 (three-AZ zone awareness)."
  }
}

variable "master_instance_type" {
  type = string
}

variable "data_volume_gib" {
  type = number
}

variable "kms_key_arn" {
  type = string
}

variable "logs_kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}
