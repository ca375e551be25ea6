variable "name" {
  type = string
}

variable "eks_cluster_name" {
  type = string
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

variable "privacy_bucket_arn" {
  type = string
}

variable "privacy_kms_key_arn" {
  type = string
}
