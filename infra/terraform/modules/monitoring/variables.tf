variable "name" {
  type = string
}

variable "region" {
  type = string
}

variable "monitoring_dir" {
  description = "infra/monitoring: prometheus.yml, alertmanager.yml, rules/, dashboards/ (the files the local stack runs)."
  type        = string
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

variable "eks_cluster_name" {
  type = string
}

variable "eks_cluster_arn" {
  type = string
}

variable "grafana_version" {
  type = string
}

variable "kms_key_arn" {
  description = "Encrypts the workspace and the alert topics."
  type        = string
}

variable "logs_kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}
