output "workspace_id" {
  value = aws_prometheus_workspace.this.id
}

output "workspace_arn" {
  value = aws_prometheus_workspace.this.arn
}

output "prometheus_endpoint" {
  value = aws_prometheus_workspace.this.prometheus_endpoint
}

output "alertmanager_url" {
  description = "AMP's Alertmanager API (SigV4-signed requests: aps:CreateAlertManagerAlerts)."
  value       = "${aws_prometheus_workspace.this.prometheus_endpoint}alertmanager"
}

output "alert_topic_arns" {
  description = "Receiver -> SNS topic the pager (on-call) and the ticket queue (tickets) subscribe to."
  value       = { for name, topic in aws_sns_topic.alerts : name => topic.arn }
}

output "grafana_endpoint" {
  value = aws_grafana_workspace.this.endpoint
}

output "grafana_token" {
  description = "For the grafana provider only."
  value       = aws_grafana_workspace_service_account_token.terraform.key
  sensitive   = true
}
