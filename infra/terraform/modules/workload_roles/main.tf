# The long-running services on EKS each get a role of their own through EKS Pod Identity,
# bound to one namespace and service account, allowed only what that service does:
#   serving            the context API: reads the privacy key ring, writes the audit topic
#   knowledge-indexer  reads knowledge document changes (the index itself is OpenSearch's
#                      users, not IAM)
#   cdc-pump           writes profile changes to user_profile_cdc

locals {
  trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
  connect = {
    Sid      = "KafkaConnect"
    Effect   = "Allow"
    Action   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    Resource = var.msk_cluster_arn
  }
  workloads = {
    serving = {
      namespace = "serving"
      statements = [
        local.connect,
        {
          Sid      = "KeyRing"
          Effect   = "Allow"
          Action   = "s3:GetObject"
          Resource = "${var.privacy_bucket_arn}/keyring/*"
        },
        {
          Sid      = "PrivacyKey"
          Effect   = "Allow"
          Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
          Resource = var.privacy_kms_key_arn
        },
        {
          Sid      = "AuditTopicsWrite"
          Effect   = "Allow"
          Action   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
          Resource = ["${var.msk_topic_arn_prefix}/inference_audit"]
        },
      ]
    }
    knowledge-indexer = {
      namespace = "retrieval"
      statements = [
        local.connect,
        {
          Sid      = "DocumentsRead"
          Effect   = "Allow"
          Action   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
          Resource = ["${var.msk_topic_arn_prefix}/knowledge_documents"]
        },
        {
          Sid      = "OwnGroup"
          Effect   = "Allow"
          Action   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
          Resource = "${var.msk_group_arn_prefix}/knowledge-indexer*"
        },
      ]
    }
    cdc-pump = {
      namespace = "ingest"
      statements = [
        local.connect,
        {
          Sid      = "ProfilesWrite"
          Effect   = "Allow"
          Action   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
          Resource = ["${var.msk_topic_arn_prefix}/user_profile_cdc", "${var.msk_topic_arn_prefix}/user_profile_cdc.dlq"]
        },
      ]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each           = local.workloads
  name               = "${var.name}-${each.key}"
  assume_role_policy = local.trust
}

resource "aws_iam_role_policy" "this" {
  for_each = local.workloads
  name     = each.key
  role     = aws_iam_role.this[each.key].id
  policy   = jsonencode({ Version = "2012-10-17", Statement = each.value.statements })
}

resource "aws_eks_pod_identity_association" "this" {
  for_each        = local.workloads
  cluster_name    = var.eks_cluster_name
  namespace       = each.value.namespace
  service_account = each.key
  role_arn        = aws_iam_role.this[each.key].arn
}
