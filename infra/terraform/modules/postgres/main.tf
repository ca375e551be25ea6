# The platform's Postgres: Aurora PostgreSQL, one cluster holding two databases with a role
# each (config/production.yaml):
#   profiles     the user profiles the CDC pump captures (logical replication, pgoutput)
#                and the users' wrapped data keys (privacy.user_keys_postgres)
#   mercury_ops  Flink deployment records and dead-letter replay ledgers (mercury/ops/state.py):
#                what an Airflow retry on another MWAA worker must see
# A writer and a reader in different AZs (failover in about a minute; the storage itself is
# six copies over three AZs), private subnets only, TLS forced, encrypted with its own key.
# Credentials live in Secrets Manager and rotate: the master's is managed by RDS itself, each
# service role's by the AWS multi-user rotation function (the master's secret rotates them).

terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}

data "aws_partition" "current" {}

locals {
  # The roles the services log in as (created once by bootstrap.sql, beside this file):
  # CDC reads the profiles through a replication slot, the key store and the ops state each
  # own their tables and nothing else.
  service_roles = {
    mercury_cdc  = { database = "profiles", purpose = "CDC pump (logical replication of the profiles)" }
    mercury_keys = { database = "profiles", purpose = "users' wrapped data keys (crypto-shredding)" }
    mercury_ops  = { database = "mercury_ops", purpose = "deployment records and replay ledgers" }
  }
}

resource "aws_security_group" "this" {
  name        = "${var.name}-postgres"
  description = "Aurora PostgreSQL: TLS clients inside the VPC only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  security_group_id = aws_security_group.this.id
  description       = "CDC pump, context API key reads, MWAA workers (ops state), rotation function"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

# The rotation function's own group: it signs in to the cluster and calls Secrets Manager.
resource "aws_security_group" "rotation" {
  #checkov:skip=CKV2_AWS_5:Attached to the rotation Lambda through the serverless application's vpcSecurityGroupIds parameter below, which checkov's graph does not follow.
  name        = "${var.name}-postgres-rotation"
  description = "Secrets rotation function: to the cluster and to AWS APIs only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "rotation_postgres" {
  security_group_id = aws_security_group.rotation.id
  description       = "The cluster, to change the service roles' passwords"
  cidr_ipv4         = var.client_cidr_block
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

resource "aws_vpc_security_group_egress_rule" "rotation_https" {
  security_group_id = aws_security_group.rotation.id
  description       = "Secrets Manager's API over TLS (through the NAT gateways)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_db_subnet_group" "this" {
  name        = "${var.name}-postgres"
  description = "One private subnet per AZ"
  subnet_ids  = var.subnet_ids
}

# Logical replication (rds.logical_replication = 1) turns wal_level to logical: the CDC pump's
# slot and publication (mercury/cdc/profiles.py) need it. A slot holds WAL until it is read,
# so max_slot_wal_keep_size bounds what a stalled pump can cost the writer's storage.
resource "aws_rds_cluster_parameter_group" "this" {
  name        = "${var.name}-aurora-pg${var.engine_major_version}"
  family      = "aurora-postgresql${var.engine_major_version}"
  description = "Logical replication for CDC, TLS only, statement and connection logging"

  parameter {
    name         = "rds.logical_replication"
    value        = "1"
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_slot_wal_keep_size"
    value        = tostring(var.max_slot_wal_keep_mb)
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  # DDL only: statements carry personal data (profiles), which logs must not.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

resource "aws_iam_role" "monitoring" {
  name = "${var.name}-postgres-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_cloudwatch_log_group" "postgresql" {
  # RDS writes to this exact name; creating it first sets retention and encryption.
  name              = "/aws/rds/cluster/${var.name}-postgres/postgresql"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_rds_cluster" "this" {
  cluster_identifier              = "${var.name}-postgres"
  engine                          = "aurora-postgresql"
  engine_version                  = var.engine_version
  database_name                   = "profiles"
  master_username                 = "mercury_admin"
  manage_master_user_password     = true # RDS keeps it in Secrets Manager and rotates it
  master_user_secret_kms_key_id   = var.kms_key_arn
  db_subnet_group_name            = aws_db_subnet_group.this.name
  vpc_security_group_ids          = [aws_security_group.this.id]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.this.name
  port                            = 5432

  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  iam_database_authentication_enabled = true
  deletion_protection                 = true
  backup_retention_period             = var.backup_retention_days
  preferred_backup_window             = "02:00-03:00"
  copy_tags_to_snapshot               = true
  final_snapshot_identifier           = "${var.name}-postgres-final"
  enabled_cloudwatch_logs_exports     = ["postgresql"]

  depends_on = [aws_cloudwatch_log_group.postgresql]
}

# Writer and reader in two different AZs (the subnets' first two); a failover promotes the
# reader. Instance class from docs/CAPACITY.md.
resource "aws_rds_cluster_instance" "this" {
  count                                 = var.instance_count
  identifier                            = "${var.name}-postgres-${count.index + 1}"
  cluster_identifier                    = aws_rds_cluster.this.id
  engine                                = aws_rds_cluster.this.engine
  engine_version                        = aws_rds_cluster.this.engine_version
  instance_class                        = var.instance_class
  availability_zone                     = var.availability_zones[count.index % length(var.availability_zones)]
  db_subnet_group_name                  = aws_db_subnet_group.this.name
  publicly_accessible                   = false
  auto_minor_version_upgrade            = true
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  promotion_tier                        = count.index
}

# --- the service roles' credentials: Secrets Manager, rotated -------------------------------

# AWS's published rotation function for PostgreSQL (alternating users: a rotation never
# breaks the connections made with the previous password). It runs in the VPC, next to the
# cluster, and signs in with the master's secret to change the service role's password.
resource "aws_serverlessapplicationrepository_cloudformation_stack" "rotation" {
  name           = "${var.name}-postgres-rotation"
  application_id = "arn:aws:serverlessrepo:us-east-1:297356227824:applications/SecretsManagerRDSPostgreSQLRotationMultiUser"
  capabilities   = ["CAPABILITY_IAM", "CAPABILITY_RESOURCE_POLICY"]
  parameters = {
    endpoint              = "https://secretsmanager.${var.region}.${data.aws_partition.current.dns_suffix}"
    functionName          = "${var.name}-postgres-rotation"
    vpcSubnetIds          = join(",", var.subnet_ids)
    vpcSecurityGroupIds   = aws_security_group.rotation.id
    kmsKeyArn             = var.kms_key_arn
    masterSecretArn       = aws_rds_cluster.this.master_user_secret[0].secret_arn
    masterSecretKmsKeyArn = var.kms_key_arn
  }
}

resource "aws_secretsmanager_secret" "service" {
  for_each    = local.service_roles
  name        = "${var.name}/postgres/${each.key}"
  description = "Aurora PostgreSQL role ${each.key}: ${each.value.purpose}"
  kms_key_id  = var.kms_key_arn
}

# The first version names the role and the cluster; the first rotation (at once) sets the
# role's password through the master's secret, so this random one is never the role's.
data "aws_secretsmanager_random_password" "initial" {
  for_each            = local.service_roles
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "service" {
  for_each  = local.service_roles
  secret_id = aws_secretsmanager_secret.service[each.key].id
  secret_string = jsonencode({
    engine    = "postgres"
    host      = aws_rds_cluster.this.endpoint
    port      = 5432
    dbname    = each.value.database
    username  = each.key
    password  = data.aws_secretsmanager_random_password.initial[each.key].random_password
    masterarn = aws_rds_cluster.this.master_user_secret[0].secret_arn
  })
  lifecycle {
    ignore_changes = [secret_string] # the rotation owns it from then on
  }
}

resource "aws_secretsmanager_secret_rotation" "service" {
  for_each            = local.service_roles
  secret_id           = aws_secretsmanager_secret.service[each.key].id
  rotation_lambda_arn = aws_serverlessapplicationrepository_cloudformation_stack.rotation.outputs["RotationLambdaARN"]
  rotate_immediately  = true
  rotation_rules {
    automatically_after_days = var.rotation_days
  }
  depends_on = [aws_secretsmanager_secret_version.service]
}

# --- backups that outlive the cluster -------------------------------------------------------

# Aurora's own backups (35 days, point in time) go with the cluster; AWS Backup keeps daily
# recovery points in a vault of their own, so deleting the cluster (or an attacker with rights
# on it) does not delete its history. 35 days: the same window as point-in-time recovery.
resource "aws_backup_vault" "this" {
  name        = "${var.name}-postgres"
  kms_key_arn = var.kms_key_arn
}

resource "aws_backup_plan" "this" {
  name = "${var.name}-postgres"
  rule {
    rule_name         = "daily"
    target_vault_name = aws_backup_vault.this.name
    schedule          = "cron(0 3 * * ? *)"
    lifecycle {
      delete_after = var.backup_retention_days
    }
  }
}

resource "aws_iam_role" "backup" {
  name = "${var.name}-postgres-backup"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "backup.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "backup" {
  role       = aws_iam_role.backup.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"
}

resource "aws_backup_selection" "this" {
  name         = "${var.name}-postgres"
  plan_id      = aws_backup_plan.this.id
  iam_role_arn = aws_iam_role.backup.arn
  resources    = [aws_rds_cluster.this.arn]
}
