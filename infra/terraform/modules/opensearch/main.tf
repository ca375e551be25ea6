# OpenSearch Service for the knowledge index (kNN, one index per embedding-model version behind
# the `knowledge` alias): data nodes spread over three AZs with zone awareness, three dedicated
# masters (one per AZ, so losing an AZ keeps a quorum), in the VPC, TLS 1.2+, encrypted with its
# own key, fine-grained access control, every log type to CloudWatch.

terraform {
  required_providers {
    aws    = { source = "hashicorp/aws" }
    random = { source = "hashicorp/random" }
  }
}

data "aws_caller_identity" "current" {}

resource "aws_security_group" "this" {
  name        = "${var.name}-opensearch"
  description = "Knowledge index: HTTPS from inside the VPC only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "Context API, knowledge indexer and rebuild jobs in the VPC"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# The master user administers the security plugin (creates the indexer's and the readers'
# users, config/production.yaml: MERCURY_OPENSEARCH_USER/PASSWORD); its password lives only
# in Secrets Manager (and the encrypted Terraform state).
resource "random_password" "master" {
  length           = 40
  special          = true
  override_special = "!#%*-_=+"
  min_special      = 1
  min_upper        = 1
  min_lower        = 1
  min_numeric      = 1
}

resource "aws_secretsmanager_secret" "master" {
  #checkov:skip=CKV2_AWS_57:The master password is rotated by a Terraform change (random_password keepers); a rotation Lambda for the security plugin is not built.
  name       = "${var.name}/opensearch-master"
  kms_key_id = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "master" {
  secret_id     = aws_secretsmanager_secret.master.id
  secret_string = jsonencode({ username = "mercury-admin", password = random_password.master.result })
}

resource "aws_cloudwatch_log_group" "this" {
  for_each          = toset(["INDEX_SLOW_LOGS", "SEARCH_SLOW_LOGS", "ES_APPLICATION_LOGS", "AUDIT_LOGS"])
  name              = "/mercury/${var.name}/opensearch/${lower(each.key)}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_cloudwatch_log_resource_policy" "this" {
  policy_name = "${var.name}-opensearch-logs"
  policy_document = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "es.amazonaws.com" }
      Action    = ["logs:PutLogEvents", "logs:CreateLogStream"]
      Resource  = [for group in aws_cloudwatch_log_group.this : "${group.arn}:*"]
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

resource "aws_opensearch_domain" "this" {
  domain_name    = var.name
  engine_version = var.engine_version

  cluster_config {
    instance_type            = var.data_instance_type
    instance_count           = var.data_node_count
    zone_awareness_enabled   = true
    dedicated_master_enabled = true
    dedicated_master_type    = var.master_instance_type
    dedicated_master_count   = 3
    zone_awareness_config {
      availability_zone_count = 3
    }
  }

  ebs_options {
    ebs_enabled = true
    volume_type = "gp3"
    volume_size = var.data_volume_gib
  }

  vpc_options {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.this.id]
  }

  encrypt_at_rest {
    enabled    = true
    kms_key_id = var.kms_key_arn
  }

  node_to_node_encryption {
    enabled = true
  }

  domain_endpoint_options {
    enforce_https       = true
    tls_security_policy = "Policy-Min-TLS-1-2-PFS-2023-10"
  }

  advanced_security_options {
    enabled                        = true
    internal_user_database_enabled = true
    master_user_options {
      master_user_name     = "mercury-admin"
      master_user_password = random_password.master.result
    }
  }

  # Identity-based access inside the account; the security plugin decides per user and index.
  access_policies = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "es:ESHttp*"
      Resource  = "arn:aws:es:${var.region}:${data.aws_caller_identity.current.account_id}:domain/${var.name}/*"
    }]
  })

  log_publishing_options {
    log_type                 = "INDEX_SLOW_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.this["INDEX_SLOW_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "SEARCH_SLOW_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.this["SEARCH_SLOW_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "ES_APPLICATION_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.this["ES_APPLICATION_LOGS"].arn
    enabled                  = true
  }

  log_publishing_options {
    log_type                 = "AUDIT_LOGS"
    cloudwatch_log_group_arn = aws_cloudwatch_log_group.this["AUDIT_LOGS"].arn
    enabled                  = true
  }

  depends_on = [aws_cloudwatch_log_resource_policy.this]
}
