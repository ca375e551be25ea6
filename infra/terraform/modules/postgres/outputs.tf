output "endpoint" {
  description = "The writer endpoint: postgres.host, privacy.user_keys_postgres.host, ops_state.postgres.host (the certificate names it: a CNAME would fail verify-full)."
  value       = aws_rds_cluster.this.endpoint
}

output "reader_endpoint" {
  value = aws_rds_cluster.this.reader_endpoint
}

output "master_secret_arn" {
  value = aws_rds_cluster.this.master_user_secret[0].secret_arn
}

output "service_secret_arns" {
  description = "Role -> its secret (MERCURY_PG_PASSWORD, MERCURY_KEYS_PG_PASSWORD, MERCURY_OPS_PG_PASSWORD come from these)."
  value       = { for role, secret in aws_secretsmanager_secret.service : role => secret.arn }
}

output "security_group_id" {
  value = aws_security_group.this.id
}
