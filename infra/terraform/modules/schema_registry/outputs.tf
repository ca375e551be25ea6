output "url" {
  description = "event_log.schema_registry_url"
  value       = "https://${aws_route53_record.this.fqdn}"
}

output "image_repository_url" {
  value = aws_ecr_repository.this.repository_url
}
