variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "client_cidr_block" {
  type = string
}

variable "engine_version" {
  type = string
}

variable "node_type" {
  description = "Node size (docs/CAPACITY.md: memory per shard after ElastiCache's reserved 25%)."
  type        = string
}

variable "shards" {
  description = "Primary shards (node groups); each has one replica in another AZ."
  type        = number
  validation {
    condition     = var.shards % 3 == 0
    error_message = "shards must be a multiple of 3 so primaries spread evenly over the three AZs."
  }
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
