variable "name" {
  description = "Name prefix of the VPC and its parts."
  type        = string
}

variable "region" {
  description = "AWS region (names the S3 gateway endpoint's service)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's range; a /16 leaves three /18 private subnets and the public /24s."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the VPC flow logs."
  type        = number
}

variable "logs_kms_key_arn" {
  description = "KMS key encrypting the flow log group."
  type        = string
}

variable "az_ids" {
  description = "The three availability zone IDs (e.g. euw1-az1) the platform spreads over."
  type        = list(string)
  validation {
    condition     = length(var.az_ids) == 3 && length(distinct(var.az_ids)) == 3
    error_message = "az_ids must name exactly three distinct zones (MISSION: 3 AZs)."
  }
}

variable "internal_zone_name" {
  description = "The private hosted zone of the services' names (config/production.yaml)."
  type        = string
}
