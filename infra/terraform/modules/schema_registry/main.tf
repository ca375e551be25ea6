# The Confluent-compatible schema registry (event_log.schema_registry_url): Confluent Schema
# Registry on the EKS cluster, its schemas in the compacted `_schemas` topic on MSK, three
# replicas (one per AZ; a Kafka group elects the one that writes), behind an internal NLB that
# terminates TLS with a certificate for schema-registry.<zone>. Why this and not AWS Glue
# Schema Registry: docs/decisions/0020-schema-registry-on-eks.md (Glue's wire format is not
# Confluent's, and the clients here are confluent-kafka's).
#
# It authenticates to MSK with IAM (EKS Pod Identity: the aws-msk-iam-auth jar is in our image
# of it), so it holds no password; its role may touch `_schemas` and its own group, nothing else.

terraform {
  required_providers {
    aws        = { source = "hashicorp/aws" }
    kafka      = { source = "Mongey/kafka" }
    kubernetes = { source = "hashicorp/kubernetes" }
  }
}

locals {
  labels = { "app.kubernetes.io/name" = "schema-registry" }
  group  = "schema-registry"
  # The image's settings (the cp image maps SCHEMA_REGISTRY_* to schema-registry.properties).
  environment = {
    SCHEMA_REGISTRY_HOST_NAME                                     = "$(POD_IP)"
    SCHEMA_REGISTRY_LISTENERS                                     = "http://0.0.0.0:8081"
    SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS                  = var.bootstrap_servers_iam
    SCHEMA_REGISTRY_KAFKASTORE_TOPIC                              = kafka_topic.schemas.name
    SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR           = "3"
    SCHEMA_REGISTRY_KAFKASTORE_SECURITY_PROTOCOL                  = "SASL_SSL"
    SCHEMA_REGISTRY_KAFKASTORE_SASL_MECHANISM                     = "AWS_MSK_IAM"
    SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG                   = "software.amazon.msk.auth.iam.IAMLoginModule required;"
    SCHEMA_REGISTRY_KAFKASTORE_SASL_CLIENT_CALLBACK_HANDLER_CLASS = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
    SCHEMA_REGISTRY_SCHEMA_REGISTRY_GROUP_ID                      = local.group
    # Producers register on first use (mercury/eventlog); a change must stay readable by the
    # consumers of older data (mercury/contracts/compatibility.py holds the same line in CI).
    SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL = "backward_transitive"
    SCHEMA_REGISTRY_HEAP_OPTS                  = "-Xms512m -Xmx512m"
  }
}

# --- the store: one compacted partition (the registry's log), replicated over the AZs -------

resource "kafka_topic" "schemas" {
  name               = "_schemas"
  partitions         = 1
  replication_factor = 3
  config = {
    "cleanup.policy"      = "compact"
    "min.insync.replicas" = "2"
  }
}

# --- its AWS rights (Pod Identity) ----------------------------------------------------------

resource "aws_iam_role" "this" {
  name = "${var.name}-schema-registry"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy" "this" {
  name = "schema-registry"
  role = aws_iam_role.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "KafkaConnect"
        Effect   = "Allow"
        Action   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
        Resource = var.msk_cluster_arn
      },
      {
        Sid    = "SchemasTopic"
        Effect = "Allow"
        Action = [
          "kafka-cluster:DescribeTopic", "kafka-cluster:DescribeTopicDynamicConfiguration",
          "kafka-cluster:ReadData", "kafka-cluster:WriteData",
        ]
        Resource = "${var.msk_topic_arn_prefix}/${kafka_topic.schemas.name}"
      },
      {
        Sid      = "LeaderElection"
        Effect   = "Allow"
        Action   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
        Resource = "${var.msk_group_arn_prefix}/${local.group}"
      },
    ]
  })
}

resource "aws_eks_pod_identity_association" "this" {
  cluster_name    = var.eks_cluster_name
  namespace       = kubernetes_namespace_v1.this.metadata[0].name
  service_account = kubernetes_service_account_v1.this.metadata[0].name
  role_arn        = aws_iam_role.this.arn
}

# --- the image: Confluent's, plus the MSK IAM auth jar, mirrored by CI (tags immutable) -----

resource "aws_ecr_repository" "this" {
  name                 = "${var.name}/schema-registry"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

# --- on the cluster ---------------------------------------------------------------------------

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = "schema-registry"
  }
}

resource "kubernetes_service_account_v1" "this" {
  metadata {
    name      = "schema-registry"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }
  automount_service_account_token = false
}

resource "kubernetes_deployment_v1" "this" {
  #checkov:skip=CKV_K8S_43:The image comes from our ECR repository with IMMUTABLE tags, so the pinned tag names exactly one digest; CI pushes the tag and sets schema_registry_image_tag.
  metadata {
    name      = "schema-registry"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
  spec {
    replicas = 3
    selector {
      match_labels = local.labels
    }
    template {
      metadata {
        labels = local.labels
      }
      spec {
        service_account_name            = kubernetes_service_account_v1.this.metadata[0].name
        automount_service_account_token = false
        node_selector                   = { "mercury/workload" = "system" }
        # One replica per AZ: losing a zone leaves two, and the group elects a new writer.
        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "topology.kubernetes.io/zone"
          when_unsatisfiable = "DoNotSchedule"
          label_selector {
            match_labels = local.labels
          }
        }
        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "schema-registry"
          image             = "${aws_ecr_repository.this.repository_url}:${var.image_tag}"
          image_pull_policy = "Always"
          port {
            name           = "http"
            container_port = 8081
          }
          env {
            name = "POD_IP"
            value_from {
              field_ref {
                field_path = "status.podIP"
              }
            }
          }
          dynamic "env" {
            for_each = local.environment
            content {
              name  = env.key
              value = env.value
            }
          }
          resources {
            requests = { cpu = "500m", memory = "1Gi" }
            limits   = { cpu = "1", memory = "1Gi" }
          }
          readiness_probe {
            http_get {
              path = "/subjects"
              port = "http"
            }
            period_seconds = 10
          }
          liveness_probe {
            http_get {
              path = "/"
              port = "http"
            }
            initial_delay_seconds = 60
            period_seconds        = 20
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }
          # The image renders its properties file at start; the root file system stays read-only.
          volume_mount {
            name       = "config"
            mount_path = "/etc/schema-registry"
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }
        volume {
          name = "config"
          empty_dir {}
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "this" {
  metadata {
    name      = "schema-registry"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }
  spec {
    min_available = 2
    selector {
      match_labels = local.labels
    }
  }
}

# MWAA workers and pods outside the namespace reach it at https://schema-registry.<zone>: an
# internal NLB terminating TLS (the certificate names that host) in front of the pods.
resource "kubernetes_service_v1" "this" {
  metadata {
    name      = "schema-registry"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    annotations = {
      "service.beta.kubernetes.io/aws-load-balancer-type"                   = "nlb"
      "service.beta.kubernetes.io/aws-load-balancer-internal"               = "true"
      "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"               = var.certificate_arn
      "service.beta.kubernetes.io/aws-load-balancer-ssl-ports"              = "443"
      "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy" = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    }
  }
  spec {
    type     = "LoadBalancer"
    selector = local.labels
    port {
      name        = "https"
      port        = 443
      target_port = "http"
    }
  }
  wait_for_load_balancer = true
}

resource "aws_route53_record" "this" {
  zone_id = var.zone_id
  name    = "schema-registry.${var.zone_name}"
  type    = "CNAME"
  ttl     = 300
  records = [kubernetes_service_v1.this.status[0].load_balancer[0].ingress[0].hostname]
}
