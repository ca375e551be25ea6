variable "name" {
  type = string
}

variable "eks_cluster_name" {
  type = string
}

variable "namespace" {
  description = "Kubernetes namespace of the session cluster (config: flink.rest_url)."
  type        = string
}

variable "deployment_name" {
  description = "FlinkDeployment name; the operator names the REST service <name>-rest."
  type        = string
}

variable "operator_chart_repository" {
  description = "Helm repository of the Flink Kubernetes operator release."
  type        = string
}

variable "operator_version" {
  type = string
}

variable "flink_version" {
  description = "The operator's FlinkVersion value for the image's Flink (2.3, as apache-flink==2.3.0)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the job image in the ECR repository (built by CI)."
  type        = string
}

variable "slots_per_taskmanager" {
  type = number
}

variable "default_parallelism" {
  type = number
}

variable "taskmanager_cpu" {
  type = number
}

variable "taskmanager_memory" {
  type = string
}

variable "checkpoints_bucket" {
  type = string
}

variable "checkpoints_bucket_arn" {
  type = string
}

variable "lake_bucket_arn" {
  type = string
}

variable "privacy_bucket_arn" {
  type = string
}

variable "checkpoints_kms_key_arn" {
  type = string
}

variable "lake_kms_key_arn" {
  type = string
}

variable "privacy_kms_key_arn" {
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

variable "read_topics" {
  description = "Topics the streaming job consumes."
  type        = list(string)
}

variable "write_topics" {
  description = "Topics the streaming job produces to (its dead letters)."
  type        = list(string)
}
