output "execution_role_arn" {
  value = aws_iam_role.execution.arn
}

output "webserver_url" {
  value = aws_mwaa_environment.this.webserver_url
}

output "security_group_id" {
  value = aws_security_group.this.id
}
