output "endpoint" {
  description = "retrieval.index.hosts: https://<endpoint>:443"
  value       = aws_opensearch_domain.this.endpoint
}

output "domain_arn" {
  value = aws_opensearch_domain.this.arn
}

output "master_secret_arn" {
  value = aws_secretsmanager_secret.master.arn
}
