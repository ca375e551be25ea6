variable "name" {
  type = string
}

variable "kubernetes_version" {
  type = string
}

variable "subnet_ids" {
  description = "The three private subnets (one per AZ)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for Kubernetes secrets."
  type        = string
}

variable "logs_kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}

variable "node_groups" {
  description = "Node group name -> instance type, autoscaling bounds, dedicated (tainted) or shared, local NVMe RAID0 for the kubelet."
  type = map(object({
    instance_type = string
    min_size      = number
    max_size      = number
    dedicated     = bool
    local_nvme    = bool
  }))
  validation {
    # Spread over three AZs: fewer than three nodes leaves an AZ without one.
    condition     = alltrue([for g in values(var.node_groups) : g.min_size >= 3 && g.max_size >= g.min_size])
    error_message = "every node group needs min_size >= 3 (one per AZ) and max_size >= min_size."
  }
}
