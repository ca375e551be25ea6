# EMR Serverless for the Spark jobs (spark_jobs/: backfill, training sets, consistency): no
# cluster to keep up between backfills, capacity billed per job, one application the Airflow
# DAGs submit job runs to. Its ceiling is docs/BATCH.md's full-backfill cluster (800 vCPU);
# a small pre-initialized pool keeps the daily incremental run's start short.

resource "aws_security_group" "this" {
  #checkov:skip=CKV2_AWS_5:Attached to the EMR Serverless application's network_configuration below, which checkov's graph does not follow.
  name        = "${var.name}-emr-serverless"
  description = "EMR Serverless Spark workers: out to the VPC and AWS APIs only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "AWS APIs (S3 through the gateway endpoint, Glue, KMS, STS) over TLS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.this.id
  description       = "Spark driver and executors talk to each other and to MSK inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 1024
  to_port           = 65535
}

resource "aws_emrserverless_application" "spark" {
  name          = "${var.name}-spark"
  release_label = var.release_label
  type          = "spark"
  architecture  = "ARM64"

  maximum_capacity {
    cpu    = "${var.max_vcpu} vCPU"
    memory = "${var.max_vcpu * 4} GB"
    disk   = "${var.max_vcpu * 10} GB"
  }

  initial_capacity {
    initial_capacity_type = "Driver"
    initial_capacity_config {
      worker_count = 1
      worker_configuration {
        cpu    = "4 vCPU"
        memory = "16 GB"
      }
    }
  }

  initial_capacity {
    initial_capacity_type = "Executor"
    initial_capacity_config {
      worker_count = var.warm_executors
      worker_configuration {
        cpu    = "4 vCPU"
        memory = "16 GB"
      }
    }
  }

  auto_start_configuration {
    enabled = true
  }

  auto_stop_configuration {
    enabled              = true
    idle_timeout_minutes = 15
  }

  network_configuration {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.this.id]
  }
}

# The job runtime role: what a Spark job may touch (the lake, the catalog, its code), no more.
resource "aws_iam_role" "job" {
  name = "${var.name}-spark-job"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "emr-serverless.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceArn" = aws_emrserverless_application.spark.arn } }
    }]
  })
}

resource "aws_iam_role_policy" "job" {
  name = "spark-job"
  role = aws_iam_role.job.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "LakeReadWrite"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = [for arn in var.lake_bucket_arns : "${arn}/warehouse/*"]
      },
      {
        Sid      = "LakeList"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = var.lake_bucket_arns
      },
      {
        Sid      = "CodeAndLogs"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject"]
        Resource = ["${var.artifacts_bucket_arn}/spark/*", "${var.artifacts_bucket_arn}/emr-logs/*"]
      },
      {
        Sid    = "GlueCatalog"
        Effect = "Allow"
        Action = [
          "glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables",
          "glue:CreateTable", "glue:UpdateTable", "glue:GetPartitions",
        ]
        Resource = concat(
          ["arn:aws:glue:${var.region}:${var.account_id}:catalog"],
          var.glue_database_arns,
          [for name in var.glue_database_names : "arn:aws:glue:${var.region}:${var.account_id}:table/${name}/*"],
        )
      },
      {
        Sid      = "Keys"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource = var.kms_key_arns
      },
      # spark_submit.secrets: the driver fetches these at start (mercury/batch/secrets.py);
      # the job run itself carries only their names. These secrets and no others.
      {
        Sid      = "JobSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = var.secret_arns
      },
      {
        Sid       = "JobSecretsKeys"
        Effect    = "Allow"
        Action    = "kms:Decrypt"
        Resource  = var.secrets_kms_key_arns
        Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${var.region}.amazonaws.com" } }
      },
    ]
  })
}
