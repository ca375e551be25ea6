output "cluster_arn" {
  value = aws_msk_cluster.this.arn
}

output "bootstrap_brokers_iam" {
  description = "Bootstrap servers of the IAM listener (9098)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "bootstrap_brokers_scram" {
  description = "Bootstrap servers of the SCRAM listener (9096): event_log.bootstrap_servers."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

# IAM resource ARNs of the cluster's topics and groups: arn:...:topic/<cluster>/<uuid>/<topic>.
output "topic_arn_prefix" {
  value = replace(aws_msk_cluster.this.arn, ":cluster/", ":topic/")
}

output "group_arn_prefix" {
  value = replace(aws_msk_cluster.this.arn, ":cluster/", ":group/")
}

output "security_group_id" {
  value = aws_security_group.this.id
}
