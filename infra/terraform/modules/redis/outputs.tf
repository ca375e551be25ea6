output "configuration_endpoint" {
  description = "online_store.host (cluster mode: the configuration endpoint)."
  value       = aws_elasticache_replication_group.this.configuration_endpoint_address
}

output "auth_secret_arn" {
  description = "Secrets Manager secret injected into pods as MERCURY_REDIS_AUTH."
  value       = aws_secretsmanager_secret.auth.arn
}
