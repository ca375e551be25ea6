variable "name" {
  type = string
}

variable "eks_cluster_name" {
  type = string
}

variable "image_tag" {
  description = "Tag of the schema registry image CI pushed to this module's ECR repository."
  type        = string
}

variable "bootstrap_servers_iam" {
  description = "MSK bootstrap servers of the IAM listener."
  type        = string
}

variable "msk_cluster_arn" {
  type = string
}

variable "msk_topic_arn_prefix" {
  type = string
}

variable "msk_group_arn_prefix" {
  type = string
}

variable "certificate_arn" {
  description = "ACM certificate for schema-registry.<zone> (the private CA the clients trust)."
  type        = string
}

variable "zone_id" {
  description = "The VPC's private hosted zone."
  type        = string
}

variable "zone_name" {
  type = string
}

variable "kms_key_arn" {
  description = "Encrypts the image repository."
  type        = string
}
