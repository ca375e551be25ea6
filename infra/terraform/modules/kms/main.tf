# One customer-managed key per purpose, so a grant on one (the checkpoints, say) never opens
# another (the privacy key ring, the audit trail), and each key's use shows apart in CloudTrail.
# Key policies delegate to IAM (the account root statement): who may use a key is decided by
# the least-privilege role policies of each component, next to the component.

data "aws_caller_identity" "current" {}

locals {
  account_root = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"
  # CloudWatch Logs encrypts log groups with the logs key on its own behalf.
  logs_statement = {
    Sid       = "CloudWatchLogs"
    Effect    = "Allow"
    Principal = { Service = "logs.${var.region}.amazonaws.com" }
    Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    Resource  = "*"
    Condition = {
      ArnLike = {
        "kms:EncryptionContext:aws:logs:arn" = "arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"
      }
    }
  }
  # Managed Prometheus's Alertmanager publishes to the alert topics, encrypted with this key.
  monitoring_statement = {
    Sid       = "ManagedPrometheusPublishesAlerts"
    Effect    = "Allow"
    Principal = { Service = "aps.amazonaws.com" }
    Action    = ["kms:GenerateDataKey*", "kms:Decrypt"]
    Resource  = "*"
    Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
  }
}

resource "aws_kms_key" "this" {
  for_each                = var.purposes
  description             = "${var.name}: ${each.value}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "AccountAdministersThroughIam"
        Effect    = "Allow"
        Principal = { AWS = local.account_root }
        Action    = "kms:*"
        Resource  = "*"
      }],
      each.key == "logs" ? [local.logs_statement] : [],
      each.key == "monitoring" ? [local.monitoring_statement] : [],
    )
  })
}

resource "aws_kms_alias" "this" {
  for_each      = var.purposes
  name          = "alias/${var.name}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}
