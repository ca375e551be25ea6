# Production, one region per apply (eu-west-1.tfvars, us-east-1.tfvars). Reads top to bottom:
# keys, network, storage and catalog, the event log and its schema registry, the compute
# (Flink on EKS, Spark on EMR Serverless, Airflow on MWAA), the databases (Aurora Postgres),
# the serving stores (Redis, OpenSearch), the workloads' roles, monitoring (managed
# Prometheus and Grafana, loaded from infra/monitoring), and the warehouse (Snowflake). Sizes: docs/CAPACITY.md ("Production sizes").

data "aws_caller_identity" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  # The streaming job's topics (flink_jobs/online_features.py reads these; dead letters out).
  streaming_sources = ["transactions", "user_activity", "risk_signals", "user_profile_cdc"]
}

module "kms" {
  source = "../../modules/kms"
  name   = var.name
  region = var.region
  purposes = {
    lake          = "S3 lake (Iceberg tables, raw archive) and the Glue catalog"
    audit         = "audit and compliance tables"
    streaming     = "MSK at rest, Flink checkpoints and the job image"
    privacy       = "wraps the privacy key ring (mercury/privacy)"
    online        = "ElastiCache online store and its AUTH secret"
    search        = "OpenSearch knowledge index and its master secret"
    orchestration = "MWAA environment"
    platform      = "EKS secrets, code artifacts, Airflow connections"
    logs          = "CloudWatch log groups"
    databases     = "Aurora Postgres (profiles, user keys, ops state) and its secrets"
    monitoring    = "Managed Prometheus workspace and the alert topics"
  }
}

module "network" {
  source             = "../../modules/network"
  name               = var.name
  region             = var.region
  az_ids             = var.az_ids
  cidr_block         = var.vpc_cidr_block
  internal_zone_name = "internal"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.kms.key_arns["logs"]
}

module "storage" {
  source                    = "../../modules/storage"
  bucket_prefix             = var.bucket_prefix
  account_id                = local.account_id
  access_log_retention_days = var.lake_retention_days
  buckets = {
    # warehouse/: Iceberg tables (13 months by Iceberg maintenance); archive/: raw event
    # files, the replay path (13 months by age); staging/: Flink's part files before compaction.
    lake = {
      kms_key_arn       = module.kms.key_arns["lake"]
      noncurrent_days   = 7
      expire_after_days = { "archive/" = var.lake_retention_days, "staging/" = 14 }
      tier_after_days   = { "warehouse/" = 30, "archive/" = 30 }
    }
    audit = {
      kms_key_arn       = module.kms.key_arns["audit"]
      noncurrent_days   = 7
      expire_after_days = { "archive/" = var.lake_retention_days }
      tier_after_days   = { "warehouse/" = 90 }
    }
    # flink/checkpoints: Flink deletes what no retained checkpoint needs (incremental files
    # can be old and still live: no age rule); savepoints older than three monthly redeploys go.
    checkpoints = {
      kms_key_arn       = module.kms.key_arns["streaming"]
      noncurrent_days   = 7
      expire_after_days = { "flink/savepoints/" = 90 }
      tier_after_days   = {}
    }
    # The key ring: its current version is never expired; old versions go after 30 days so a
    # key dropped from the ring is gone within the GDPR's window.
    privacy-keys = {
      kms_key_arn       = module.kms.key_arns["privacy"]
      noncurrent_days   = 30
      expire_after_days = {}
      tier_after_days   = {}
    }
    artifacts = {
      kms_key_arn       = module.kms.key_arns["platform"]
      noncurrent_days   = 30
      expire_after_days = { "emr-logs/" = 90 }
      tier_after_days   = {}
    }
  }
}

module "glue" {
  source      = "../../modules/glue"
  kms_key_arn = module.kms.key_arns["lake"]
  databases = {
    raw        = { description = "Validated stream records", location_uri = "s3://${module.storage.bucket_names["lake"]}/warehouse/raw" }
    quality    = { description = "Dead letters and late events", location_uri = "s3://${module.storage.bucket_names["lake"]}/warehouse/quality" }
    features   = { description = "Feature history (offline store)", location_uri = "s3://${module.storage.bucket_names["lake"]}/warehouse/features" }
    audit      = { description = "Inference audit and safety outcomes", location_uri = "s3://${module.storage.bucket_names["audit"]}/warehouse/audit" }
    compliance = { description = "Erasure evidence", location_uri = "s3://${module.storage.bucket_names["audit"]}/warehouse/compliance" }
  }
}

module "msk" {
  source                         = "../../modules/msk"
  name                           = "${var.name}-events"
  vpc_id                         = module.network.vpc_id
  subnet_ids                     = module.network.private_subnet_ids
  client_cidr_block              = module.network.vpc_cidr_block
  kafka_version                  = var.kafka_version
  broker_count                   = 3
  broker_instance_type           = var.msk_broker_instance_type
  broker_volume_gib              = var.msk_broker_volume_gib
  broker_volume_throughput_mibps = var.msk_broker_volume_throughput_mibps
  kms_key_arn                    = module.kms.key_arns["streaming"]
  logs_kms_key_arn               = module.kms.key_arns["logs"]
  log_retention_days             = var.log_retention_days
  scram_secret_arns              = var.msk_scram_secret_arns
}

module "kafka_topics" {
  source     = "../../modules/kafka_topics"
  depends_on = [module.msk]
}

# event_log.schema_registry_url: Confluent Schema Registry on EKS (docs/decisions/0020).
module "schema_registry" {
  source                = "../../modules/schema_registry"
  name                  = var.name
  eks_cluster_name      = module.eks.cluster_name
  image_tag             = var.schema_registry_image_tag
  bootstrap_servers_iam = module.msk.bootstrap_brokers_iam
  msk_cluster_arn       = module.msk.cluster_arn
  msk_topic_arn_prefix  = module.msk.topic_arn_prefix
  msk_group_arn_prefix  = module.msk.group_arn_prefix
  certificate_arn       = aws_acm_certificate.schema_registry.arn
  zone_id               = module.network.internal_zone_id
  zone_name             = module.network.internal_zone_name
  kms_key_arn           = module.kms.key_arns["platform"]
}

# Issued by the company's private CA (the clients trust it: rds-global-bundle's sibling in
# the images' trust store), for the name the registry's clients use.
resource "aws_acm_certificate" "schema_registry" {
  domain_name               = "schema-registry.internal"
  certificate_authority_arn = var.private_ca_arn
  lifecycle {
    create_before_destroy = true
  }
}

module "eks" {
  source             = "../../modules/eks"
  name               = var.name
  kubernetes_version = var.kubernetes_version
  subnet_ids         = module.network.private_subnet_ids
  kms_key_arn        = module.kms.key_arns["platform"]
  logs_kms_key_arn   = module.kms.key_arns["logs"]
  log_retention_days = var.log_retention_days
  node_groups        = var.eks_node_groups
}

module "flink" {
  source                    = "../../modules/flink"
  name                      = var.name
  eks_cluster_name          = module.eks.cluster_name
  namespace                 = "streaming"
  deployment_name           = "online-features"
  operator_chart_repository = var.flink_operator_chart_repository
  operator_version          = var.flink_operator_version
  flink_version             = var.flink_version
  image_tag                 = var.flink_image_tag
  slots_per_taskmanager     = 4
  default_parallelism       = var.flink_parallelism
  taskmanager_cpu           = 3.5
  taskmanager_memory        = "13312m"
  checkpoints_bucket        = module.storage.bucket_names["checkpoints"]
  checkpoints_bucket_arn    = module.storage.bucket_arns["checkpoints"]
  lake_bucket_arn           = module.storage.bucket_arns["lake"]
  privacy_bucket_arn        = module.storage.bucket_arns["privacy-keys"]
  checkpoints_kms_key_arn   = module.kms.key_arns["streaming"]
  lake_kms_key_arn          = module.kms.key_arns["lake"]
  privacy_kms_key_arn       = module.kms.key_arns["privacy"]
  msk_cluster_arn           = module.msk.cluster_arn
  msk_topic_arn_prefix      = module.msk.topic_arn_prefix
  msk_group_arn_prefix      = module.msk.group_arn_prefix
  read_topics               = local.streaming_sources
  write_topics              = [for t in local.streaming_sources : "${t}.dlq"]
}

module "emr_serverless" {
  source               = "../../modules/emr_serverless"
  name                 = var.name
  region               = var.region
  account_id           = local.account_id
  release_label        = var.emr_release_label
  max_vcpu             = var.emr_max_vcpu
  warm_executors       = 4
  vpc_id               = module.network.vpc_id
  vpc_cidr_block       = module.network.vpc_cidr_block
  subnet_ids           = module.network.private_subnet_ids
  lake_bucket_arns     = [module.storage.bucket_arns["lake"], module.storage.bucket_arns["audit"]]
  artifacts_bucket_arn = module.storage.bucket_arns["artifacts"]
  glue_database_arns   = values(module.glue.database_arns)
  glue_database_names  = module.glue.database_names
  kms_key_arns         = [module.kms.key_arns["lake"], module.kms.key_arns["audit"], module.kms.key_arns["platform"]]
  # config/production.yaml spark_submit.secrets: the warm start's and consistency gate's
  # Redis password (tests/test_terraform.py matches the names).
  secret_arns          = [module.redis.auth_secret_arn]
  secrets_kms_key_arns = [module.kms.key_arns["online"]]
}

module "mwaa" {
  source               = "../../modules/mwaa"
  name                 = "${var.name}-airflow"
  region               = var.region
  airflow_version      = var.mwaa_airflow_version
  environment_class    = var.mwaa_environment_class
  min_workers          = 2
  max_workers          = 20
  parallelism          = 32
  vpc_id               = module.network.vpc_id
  vpc_cidr_block       = module.network.vpc_cidr_block
  subnet_ids           = module.network.private_subnet_ids
  artifacts_bucket_arn = module.storage.bucket_arns["artifacts"]
  kms_key_arn          = module.kms.key_arns["orchestration"]
  emr_application_arn  = module.emr_serverless.application_arn
  emr_job_role_arn     = module.emr_serverless.job_role_arn
  secrets_prefix       = "${var.name}/airflow"
  secrets_kms_key_arn  = module.kms.key_arns["platform"]
  table_prefix_arns = [
    "${module.storage.bucket_arns["audit"]}/warehouse/audit",
    "${module.storage.bucket_arns["audit"]}/warehouse/compliance",
    "${module.storage.bucket_arns["lake"]}/warehouse/quality",
  ]
  glue_database_names = ["audit", "compliance", "quality"]
  table_kms_key_arns  = [module.kms.key_arns["audit"], module.kms.key_arns["lake"]]
  # Failure pages (monitoring.alertmanager_url, SigV4-signed).
  alertmanager_workspace_arn = module.monitoring.workspace_arn
}

# postgres.*, privacy.user_keys_postgres, ops_state.postgres: one Aurora cluster, two
# databases, a role each; logical replication on for the CDC pump (docs/CAPACITY.md sizes).
module "postgres" {
  source                = "../../modules/postgres"
  name                  = var.name
  region                = var.region
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  availability_zones    = module.network.azs
  client_cidr_block     = module.network.vpc_cidr_block
  engine_major_version  = "16"
  engine_version        = var.postgres_engine_version
  instance_class        = var.postgres_instance_class
  instance_count        = var.postgres_instance_count
  max_slot_wal_keep_mb  = var.postgres_max_slot_wal_keep_mb
  backup_retention_days = 35
  rotation_days         = 30
  kms_key_arn           = module.kms.key_arns["databases"]
  logs_kms_key_arn      = module.kms.key_arns["logs"]
  log_retention_days    = var.log_retention_days
}

module "redis" {
  source             = "../../modules/redis"
  name               = "${var.name}-online"
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  client_cidr_block  = module.network.vpc_cidr_block
  engine_version     = "7.1"
  node_type          = var.redis_node_type
  shards             = var.redis_shards
  kms_key_arn        = module.kms.key_arns["online"]
  logs_kms_key_arn   = module.kms.key_arns["logs"]
  log_retention_days = var.log_retention_days
}

module "opensearch" {
  source               = "../../modules/opensearch"
  name                 = "mercury-knowledge"
  region               = var.region
  vpc_id               = module.network.vpc_id
  subnet_ids           = module.network.private_subnet_ids
  client_cidr_block    = module.network.vpc_cidr_block
  engine_version       = "OpenSearch_2.19"
  data_instance_type   = var.opensearch_data_instance_type
  data_node_count      = var.opensearch_data_node_count
  master_instance_type = var.opensearch_master_instance_type
  data_volume_gib      = 200
  kms_key_arn          = module.kms.key_arns["search"]
  logs_kms_key_arn     = module.kms.key_arns["logs"]
  log_retention_days   = var.log_retention_days
}

module "workload_roles" {
  source               = "../../modules/workload_roles"
  name                 = var.name
  eks_cluster_name     = module.eks.cluster_name
  msk_cluster_arn      = module.msk.cluster_arn
  msk_topic_arn_prefix = module.msk.topic_arn_prefix
  msk_group_arn_prefix = module.msk.group_arn_prefix
  privacy_bucket_arn   = module.storage.bucket_arns["privacy-keys"]
  privacy_kms_key_arn  = module.kms.key_arns["privacy"]
}

# The SLO rules, alert routing and dashboards of infra/monitoring, as the local stack runs them.
module "monitoring" {
  source             = "../../modules/monitoring"
  name               = var.name
  region             = var.region
  monitoring_dir     = "${path.root}/../../../monitoring"
  vpc_id             = module.network.vpc_id
  vpc_cidr_block     = module.network.vpc_cidr_block
  subnet_ids         = module.network.private_subnet_ids
  eks_cluster_name   = module.eks.cluster_name
  eks_cluster_arn    = module.eks.cluster_arn
  grafana_version    = var.grafana_version
  kms_key_arn        = module.kms.key_arns["monitoring"]
  logs_kms_key_arn   = module.kms.key_arns["logs"]
  log_retention_days = var.log_retention_days
}

module "snowflake" {
  source            = "../../modules/snowflake"
  database          = "MERCURY"
  transformer_role  = "TRANSFORMER"
  analyst_role      = "COMPLIANCE_ANALYST"
  investigator_role = "COMPLIANCE_INVESTIGATOR"
  # The personal fields of the audit streams' contracts (tests/test_terraform.py checks it).
  masked_columns = {
    "AUDIT.INFERENCE_REQUESTS" = ["question", "question_redacted", "served_features_json"]
  }
  warehouses = {
    TRANSFORM_WH  = "MEDIUM"
    COMPLIANCE_WH = "XSMALL"
  }
}
