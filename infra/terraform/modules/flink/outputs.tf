output "job_role_arn" {
  value = aws_iam_role.job.arn
}

output "image_repository_url" {
  value = aws_ecr_repository.flink.repository_url
}

output "rest_url" {
  description = "flink.rest_url for config/production.yaml (in-cluster service name)."
  value       = "http://${var.deployment_name}-rest.${var.namespace}.svc:8081"
}
