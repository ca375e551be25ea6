# The Flink runtime: Flink on EKS with the Flink Kubernetes operator, one session cluster that
# the `streaming_features` DAGs drive through the Flink REST API exactly as they drive the
# local standalone cluster (submit, stop with savepoint, restore). Why not Amazon Managed
# Service for Apache Flink: see infra/terraform/README.md ("The Flink runtime").
#
# State: RocksDB with incremental checkpoints to the checkpoints bucket, local state on the
# nodes' NVMe disks; JobManager HA through Kubernetes leader election with its metadata on S3.

terraform {
  required_providers {
    aws        = { source = "hashicorp/aws" }
    helm       = { source = "hashicorp/helm" }
    kubernetes = { source = "hashicorp/kubernetes" }
  }
}

locals {
  checkpoints = "s3://${var.checkpoints_bucket}/flink"
  # The job's Flink settings; the job itself sets only its checkpoint interval.
  flink_configuration = {
    "taskmanager.numberOfTaskSlots"                             = tostring(var.slots_per_taskmanager)
    "parallelism.default"                                       = tostring(var.default_parallelism)
    "state.backend.type"                                        = "rocksdb"
    "execution.checkpointing.incremental"                       = "true"
    "execution.checkpointing.dir"                               = "${local.checkpoints}/checkpoints"
    "execution.checkpointing.savepoint-dir"                     = "${local.checkpoints}/savepoints"
    "execution.checkpointing.num-retained"                      = "3"
    "execution.checkpointing.externalized-checkpoint-retention" = "RETAIN_ON_CANCELLATION"
    "state.backend.rocksdb.localdir"                            = "/mnt/nvme/rocksdb"
    "high-availability.type"                                    = "kubernetes"
    "high-availability.storageDir"                              = "${local.checkpoints}/ha"
    "kubernetes.rest-service.exposed.type"                      = "LoadBalancer"
    # MWAA (outside the cluster) reaches the REST API through an internal load balancer.
    "kubernetes.rest-service.annotations" = "service.beta.kubernetes.io/aws-load-balancer-internal:true"
    "metrics.reporter.prom.factory.class" = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    "metrics.reporter.prom.port"          = "9249"
    # PyFlink runs from the image's Flink env (infra/envs/flink), never the system Python.
    "python.executable"        = "/opt/mercury/flink-env/bin/python"
    "python.client.executable" = "/opt/mercury/flink-env/bin/python"
  }
}

# --- the job's AWS rights: its bucket prefixes, its topics, its keys; nothing else ----------

resource "aws_iam_role" "job" {
  name = "${var.name}-flink-job"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy" "job" {
  name = "flink-job"
  role = aws_iam_role.job.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "CheckpointsReadWrite"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = "${var.checkpoints_bucket_arn}/flink/*"
      },
      {
        Sid       = "CheckpointsList"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = var.checkpoints_bucket_arn
        Condition = { StringLike = { "s3:prefix" = ["flink/*"] } }
      },
      {
        # The job stages part files for the lake (compaction commits them to Iceberg).
        Sid      = "LakeStagingWrite"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = "${var.lake_bucket_arn}/staging/*"
      },
      {
        # The online writer opens the privacy key ring to read the erasure tombstones' keys.
        Sid      = "PrivacyKeyRingRead"
        Effect   = "Allow"
        Action   = "s3:GetObject"
        Resource = "${var.privacy_bucket_arn}/keyring/*"
      },
      {
        Sid      = "Keys"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource = [var.checkpoints_kms_key_arn, var.lake_kms_key_arn, var.privacy_kms_key_arn]
      },
      {
        Sid      = "KafkaConnect"
        Effect   = "Allow"
        Action   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
        Resource = var.msk_cluster_arn
      },
      {
        Sid      = "KafkaRead"
        Effect   = "Allow"
        Action   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
        Resource = [for t in var.read_topics : "${var.msk_topic_arn_prefix}/${t}"]
      },
      {
        Sid      = "KafkaWriteDeadLetters"
        Effect   = "Allow"
        Action   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
        Resource = [for t in var.write_topics : "${var.msk_topic_arn_prefix}/${t}"]
      },
      {
        Sid      = "KafkaGroups"
        Effect   = "Allow"
        Action   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
        Resource = "${var.msk_group_arn_prefix}/flink-*"
      },
    ]
  })
}

resource "aws_eks_pod_identity_association" "job" {
  cluster_name    = var.eks_cluster_name
  namespace       = var.namespace
  service_account = "flink"
  role_arn        = aws_iam_role.job.arn
}

# --- the image: Flink 2.3 + the Flink env (PyFlink, mercury) + the JSON_FIELDS UDF jar ------

resource "aws_ecr_repository" "flink" {
  name                 = "${var.name}/flink"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.checkpoints_kms_key_arn
  }
}

# --- the operator and the session cluster -------------------------------------------------

resource "kubernetes_namespace_v1" "streaming" {
  metadata {
    name = var.namespace
  }
}

resource "helm_release" "operator" {
  name             = "flink-kubernetes-operator"
  repository       = var.operator_chart_repository
  chart            = "flink-kubernetes-operator"
  version          = var.operator_version
  namespace        = "flink-operator"
  create_namespace = true
  # The admission webhook needs cert-manager; the operator validates specs itself without it.
  set = [
    { name = "webhook.create", value = "false" },
    { name = "watchNamespaces[0]", value = var.namespace },
  ]
  depends_on = [kubernetes_namespace_v1.streaming]
}

resource "kubernetes_manifest" "session_cluster" {
  manifest = {
    apiVersion = "flink.apache.org/v1beta1"
    kind       = "FlinkDeployment"
    metadata = {
      name      = var.deployment_name
      namespace = var.namespace
    }
    spec = {
      image              = "${aws_ecr_repository.flink.repository_url}:${var.image_tag}"
      flinkVersion       = var.flink_version
      serviceAccount     = "flink"
      flinkConfiguration = local.flink_configuration
      jobManager = {
        replicas = 1
        resource = { cpu = 2, memory = "4096m" }
      }
      taskManager = {
        resource = { cpu = var.taskmanager_cpu, memory = var.taskmanager_memory }
        podTemplate = {
          spec = {
            nodeSelector = { "mercury/workload" = "flink" }
            # RocksDB's working directory: an emptyDir, on the node's NVMe RAID0 (modules/eks).
            containers = [{
              name         = "flink-main-container"
              volumeMounts = [{ name = "rocksdb", mountPath = "/mnt/nvme" }]
            }]
            volumes = [{ name = "rocksdb", emptyDir = {} }]
            tolerations = [{
              key = "mercury/workload", operator = "Equal", value = "flink", effect = "NoSchedule"
            }]
          }
        }
      }
      # No job: a session cluster. Jobs are submitted through REST by the DAGs.
    }
  }
  depends_on = [helm_release.operator]
}
