# The online store: ElastiCache Redis in cluster mode (the key layout's hash tags keep a
# user's sets on one shard, docs/decisions/0012), one replica per shard in another AZ with
# automatic failover, TLS and an AUTH token, encrypted at rest with its own key.
# maxmemory-policy noeviction: an evicted feature would be served as "no data" silently
# (docs/SERVING.md); a full store must fail loudly instead.

terraform {
  required_providers {
    aws    = { source = "hashicorp/aws" }
    random = { source = "hashicorp/random" }
  }
}

resource "aws_security_group" "this" {
  name        = "${var.name}-redis"
  description = "Online store: Redis over TLS from inside the VPC only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id = aws_security_group.this.id
  description       = "Redis clients in the VPC (context API, streaming writer, warm start)"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
}

resource "aws_elasticache_parameter_group" "this" {
  name   = "${var.name}-redis7-cluster"
  family = "redis7"
  parameter {
    name  = "cluster-enabled"
    value = "yes"
  }
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

# The AUTH token is made here and kept in Secrets Manager, from where the pods get it as
# MERCURY_REDIS_AUTH (config/production.yaml); it never appears in the repository. It is in
# the Terraform state, which is why the state bucket is KMS-encrypted and access-controlled.
resource "random_password" "auth" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "auth" {
  #checkov:skip=CKV2_AWS_57:Rotating an ElastiCache AUTH token needs a rotation Lambda that also updates the group (ROTATE strategy); not built yet, rotation is a Terraform change of random_password today.
  name       = "${var.name}/redis-auth"
  kms_key_id = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = random_password.auth.result
}

resource "aws_cloudwatch_log_group" "slow" {
  name              = "/mercury/${var.name}/redis-slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.name
  description          = "Online feature store (cluster mode, Multi-AZ)"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  parameter_group_name = aws_elasticache_parameter_group.this.name
  port                 = 6379

  num_node_groups         = var.shards
  replicas_per_node_group = 1

  multi_az_enabled           = true
  automatic_failover_enabled = true
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.this.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.auth.result
  auth_token_update_strategy = "ROTATE"

  # A day of snapshots: the store is a view of Flink state and can be rebuilt by a warm start,
  # but restoring a snapshot is faster.
  snapshot_retention_limit   = 1
  auto_minor_version_upgrade = true

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }
}
