# MWAA runs dags/ and plugins/ (the DAGs only wire; the work runs on EMR Serverless, the Flink
# session cluster, Snowflake and OpenSearch). MWAA places its workers in exactly two private
# subnets (a service limit): two of the three AZs. Losing the third costs nothing; losing one
# of the two leaves the other's scheduler and workers running (two schedulers, min 2 workers).

data "aws_caller_identity" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  env_arn    = "arn:aws:airflow:${var.region}:${local.account_id}:environment/${var.name}"
}

resource "aws_security_group" "this" {
  name        = "${var.name}-mwaa"
  description = "MWAA: its own components talk to each other; out to the VPC and AWS APIs"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "self" {
  security_group_id            = aws_security_group.this.id
  description                  = "MWAA's scheduler, workers and web server reach each other (required by MWAA)"
  referenced_security_group_id = aws_security_group.this.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "AWS APIs (EMR Serverless, S3, SQS, CloudWatch, Secrets Manager) and Snowflake over TLS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.this.id
  description       = "Flink REST (8081), MSK (9096), Postgres (5432), Redis (6379) inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 1024
  to_port           = 65535
}

resource "aws_vpc_security_group_egress_rule" "self" {
  security_group_id            = aws_security_group.this.id
  description                  = "MWAA's own components"
  referenced_security_group_id = aws_security_group.this.id
  ip_protocol                  = "-1"
}

resource "aws_iam_role" "execution" {
  name = "${var.name}-mwaa-execution"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = ["airflow.amazonaws.com", "airflow-env.amazonaws.com"] }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "execution" {
  name = "mwaa-execution"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "Metrics"
        Effect   = "Allow"
        Action   = "airflow:PublishMetrics"
        Resource = local.env_arn
      },
      {
        Sid      = "DagsAndPlugins"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:GetBucketPublicAccessBlock"]
        Resource = [var.artifacts_bucket_arn, "${var.artifacts_bucket_arn}/mwaa/*"]
      },
      {
        Sid    = "OwnLogs"
        Effect = "Allow"
        Action = [
          "logs:CreateLogStream", "logs:CreateLogGroup", "logs:PutLogEvents", "logs:GetLogEvents",
          "logs:GetLogRecord", "logs:GetLogGroupFields", "logs:GetQueryResults", "logs:DescribeLogGroups",
        ]
        Resource = "arn:aws:logs:${var.region}:${local.account_id}:log-group:airflow-${var.name}-*"
      },
      {
        # MWAA's Celery queue lives in an AWS-owned account: the name is all that can be pinned.
        Sid    = "CeleryQueue"
        Effect = "Allow"
        Action = [
          "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
          "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:SendMessage",
        ]
        Resource = "arn:aws:sqs:${var.region}:*:airflow-celery-*"
      },
      {
        Sid       = "EnvironmentKey"
        Effect    = "Allow"
        Action    = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"]
        Resource  = var.kms_key_arn
        Condition = { StringLike = { "kms:ViaService" = ["sqs.${var.region}.amazonaws.com", "s3.${var.region}.amazonaws.com"] } }
      },
      {
        Sid      = "SparkJobRuns"
        Effect   = "Allow"
        Action   = ["emr-serverless:StartJobRun", "emr-serverless:GetJobRun", "emr-serverless:CancelJobRun", "emr-serverless:GetApplication", "emr-serverless:StartApplication"]
        Resource = [var.emr_application_arn, "${var.emr_application_arn}/jobruns/*"]
      },
      {
        Sid       = "PassSparkJobRole"
        Effect    = "Allow"
        Action    = "iam:PassRole"
        Resource  = var.emr_job_role_arn
        Condition = { StringEquals = { "iam:PassedToService" = "emr-serverless.amazonaws.com" } }
      },
      {
        # The Spark jobs' code is uploaded by the DAG's packaging step (mercury wheel).
        Sid      = "SparkCode"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject"]
        Resource = "${var.artifacts_bucket_arn}/spark/*"
      },
      {
        # Tasks that still run on the worker write Iceberg tables: the hourly audit load
        # (audit.*), dead letters (quality.*), erasure evidence (compliance.*).
        Sid      = "WorkerTables"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = [for prefix in var.table_prefix_arns : "${prefix}/*"]
      },
      {
        Sid      = "WorkerTablesList"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = distinct([for prefix in var.table_prefix_arns : split("/", prefix)[0]])
      },
      {
        Sid    = "WorkerCatalog"
        Effect = "Allow"
        Action = [
          "glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:CreateTable", "glue:UpdateTable",
        ]
        Resource = concat(
          ["arn:aws:glue:${var.region}:${local.account_id}:catalog"],
          [for db in var.glue_database_names : "arn:aws:glue:${var.region}:${local.account_id}:database/${db}"],
          [for db in var.glue_database_names : "arn:aws:glue:${var.region}:${local.account_id}:table/${db}/*"],
        )
      },
      {
        Sid      = "WorkerTableKeys"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = var.table_kms_key_arns
      },
      {
        # Connections and variables (Snowflake, Kafka SCRAM) come from Secrets Manager.
        Sid      = "Secrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = "arn:aws:secretsmanager:${var.region}:${local.account_id}:secret:${var.secrets_prefix}/*"
      },
      {
        Sid      = "SecretsKey"
        Effect   = "Allow"
        Action   = "kms:Decrypt"
        Resource = var.secrets_kms_key_arn
      },
      {
        # A task failed for good pages on-call (plugins/mercury_airflow/alerting.py).
        Sid      = "PageThroughAlertmanager"
        Effect   = "Allow"
        Action   = "aps:CreateAlertManagerAlerts"
        Resource = var.alertmanager_workspace_arn
      },
    ]
  })
}

resource "aws_mwaa_environment" "this" {
  name               = var.name
  airflow_version    = var.airflow_version
  environment_class  = var.environment_class
  min_workers        = var.min_workers
  max_workers        = var.max_workers
  schedulers         = 2
  execution_role_arn = aws_iam_role.execution.arn
  kms_key            = var.kms_key_arn

  source_bucket_arn     = var.artifacts_bucket_arn
  dag_s3_path           = "mwaa/dags"
  webserver_access_mode = "PRIVATE_ONLY"

  airflow_configuration_options = {
    # Connections and variables from Secrets Manager, under one prefix the role may read.
    "secrets.backend"        = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
    "secrets.backend_kwargs" = jsonencode({ connections_prefix = "${var.secrets_prefix}/connections", variables_prefix = "${var.secrets_prefix}/variables" })
    "core.parallelism"       = tostring(var.parallelism)
    # DAGs without their own retry_delay (feature_backfill) wait this, as locally
    # (airflow.default_retry_delay_s in config/local.yaml's defaults)
    "core.default_task_retry_delay" = "60"
  }

  network_configuration {
    security_group_ids = [aws_security_group.this.id]
    subnet_ids         = slice(var.subnet_ids, 0, 2)
  }

  logging_configuration {
    dag_processing_logs {
      enabled   = true
      log_level = "INFO"
    }
    scheduler_logs {
      enabled   = true
      log_level = "INFO"
    }
    task_logs {
      enabled   = true
      log_level = "INFO"
    }
    webserver_logs {
      enabled   = true
      log_level = "WARNING"
    }
    worker_logs {
      enabled   = true
      log_level = "INFO"
    }
  }
}
