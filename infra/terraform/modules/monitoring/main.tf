# Monitoring in production runs the files that run locally (infra/monitoring), not copies:
#   - Amazon Managed Service for Prometheus: one workspace; every rules file of
#     infra/monitoring/rules is a rule group namespace, byte for byte (the SLO recording
#     rules and burn-rate alerts `promtool test rules` checks in `make test`);
#   - its Alertmanager: infra/monitoring/alertmanager.yml's routes, grouping and inhibitions,
#     with each receiver given an SNS topic (AMP's Alertmanager delivers to SNS only; the
#     on-call pager and the ticket queue subscribe to the topics);
#   - the AMP scraper on the EKS cluster: one scrape job per job of prometheus.yml, under the
#     same name (the rules select on `job`), finding pods by the annotation
#     mercury.dev/scrape-job instead of the local static targets;
#   - Amazon Managed Grafana, with infra/monitoring/dashboards loaded through the grafana
#     provider and the workspace as its Prometheus data source.

terraform {
  required_providers {
    aws        = { source = "hashicorp/aws" }
    grafana    = { source = "grafana/grafana" }
    kubernetes = { source = "hashicorp/kubernetes" }
  }
}

data "aws_caller_identity" "current" {}

locals {
  prometheus   = yamldecode(file("${var.monitoring_dir}/prometheus.yml"))
  alertmanager = yamldecode(file("${var.monitoring_dir}/alertmanager.yml"))
  rule_files   = fileset("${var.monitoring_dir}/rules", "*.yml")
  dashboards   = fileset("${var.monitoring_dir}/dashboards", "*.json")
  receivers    = toset([for receiver in local.alertmanager.receivers : receiver.name])

  # The local routing with SNS destinations: nothing else of the file changes.
  alertmanager_config = merge(local.alertmanager, {
    receivers = [for name in local.receivers : {
      name = name
      sns_configs = [{
        topic_arn = aws_sns_topic.alerts[name].arn
        sigv4     = { region = var.region }
        subject   = "{{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})"
      }]
    }]
  })

  scrape_configuration = yamlencode({
    global = {
      scrape_interval = local.prometheus.global.scrape_interval
    }
    scrape_configs = [for job in local.prometheus.scrape_configs : {
      job_name              = job.job_name
      kubernetes_sd_configs = [{ role = "pod" }]
      relabel_configs = [
        {
          source_labels = ["__meta_kubernetes_pod_annotation_mercury_dev_scrape_job"]
          regex         = job.job_name
          action        = "keep"
        },
        {
          source_labels = ["__address__", "__meta_kubernetes_pod_annotation_mercury_dev_scrape_port"]
          regex         = "([^:]+)(?::\\d+)?;(\\d+)"
          replacement   = "$1:$2"
          target_label  = "__address__"
        },
        { source_labels = ["__meta_kubernetes_namespace"], target_label = "namespace" },
        { source_labels = ["__meta_kubernetes_pod_name"], target_label = "pod" },
      ]
    }]
  })
}

# --- Prometheus: the workspace and the rules --------------------------------------------------

resource "aws_cloudwatch_log_group" "prometheus" {
  name              = "/mercury/${var.name}/prometheus"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_prometheus_workspace" "this" {
  alias       = var.name
  kms_key_arn = var.kms_key_arn
  logging_configuration {
    log_group_arn = "${aws_cloudwatch_log_group.prometheus.arn}:*"
  }
}

resource "aws_prometheus_rule_group_namespace" "this" {
  for_each     = local.rule_files
  name         = trimsuffix(each.value, ".yml")
  workspace_id = aws_prometheus_workspace.this.id
  data         = file("${var.monitoring_dir}/rules/${each.value}")
}

# --- Alertmanager: the local routing, delivering to SNS -------------------------------------

resource "aws_sns_topic" "alerts" {
  for_each          = local.receivers
  name              = "${var.name}-alerts-${each.key}"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_sns_topic_policy" "alerts" {
  for_each = local.receivers
  arn      = aws_sns_topic.alerts[each.key].arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "ManagedPrometheusPublishes"
      Effect    = "Allow"
      Principal = { Service = "aps.amazonaws.com" }
      Action    = ["sns:Publish", "sns:GetTopicAttributes"]
      Resource  = aws_sns_topic.alerts[each.key].arn
      Condition = {
        ArnEquals    = { "aws:SourceArn" = aws_prometheus_workspace.this.arn }
        StringEquals = { "AWS:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })
}

resource "aws_prometheus_alert_manager_definition" "this" {
  workspace_id = aws_prometheus_workspace.this.id
  definition   = yamlencode({ alertmanager_config = yamlencode(local.alertmanager_config) })
}

# --- scraping the EKS cluster ---------------------------------------------------------------

resource "aws_security_group" "scraper" {
  name        = "${var.name}-prometheus-scraper"
  description = "The managed Prometheus scraper: out to the pods' metrics ports in the VPC"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "scraper" {
  security_group_id = aws_security_group.scraper.id
  description       = "Metrics endpoints of pods and the Kubernetes API inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 65535
}

resource "aws_prometheus_scraper" "this" {
  alias                = "${var.name}-eks"
  scrape_configuration = local.scrape_configuration
  source {
    eks {
      cluster_arn        = var.eks_cluster_arn
      subnet_ids         = var.subnet_ids
      security_group_ids = [aws_security_group.scraper.id]
    }
  }
  destination {
    amp {
      workspace_arn = aws_prometheus_workspace.this.arn
    }
  }
}

# The scraper reads pods through the Kubernetes API as the group bound below, and only reads.
resource "aws_eks_access_entry" "scraper" {
  cluster_name      = var.eks_cluster_name
  principal_arn     = aws_prometheus_scraper.this.role_arn
  kubernetes_groups = ["mercury-prometheus-scraper"]
}

resource "kubernetes_cluster_role_v1" "scraper" {
  metadata {
    name = "mercury-prometheus-scraper"
  }
  rule {
    api_groups = [""]
    resources  = ["nodes", "nodes/metrics", "services", "endpoints", "pods"]
    verbs      = ["get", "list", "watch"]
  }
  rule {
    non_resource_urls = ["/metrics"]
    verbs             = ["get"]
  }
}

resource "kubernetes_cluster_role_binding_v1" "scraper" {
  metadata {
    name = "mercury-prometheus-scraper"
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.scraper.metadata[0].name
  }
  subject {
    kind      = "Group"
    name      = "mercury-prometheus-scraper"
    api_group = "rbac.authorization.k8s.io"
  }
}

# --- Grafana ----------------------------------------------------------------------------------

resource "aws_iam_role" "grafana" {
  name = "${var.name}-grafana"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "grafana.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

resource "aws_iam_role_policy" "grafana" {
  name = "query-prometheus"
  role = aws_iam_role.grafana.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "QueryTheWorkspace"
      Effect   = "Allow"
      Action   = ["aps:QueryMetrics", "aps:GetLabels", "aps:GetSeries", "aps:GetMetricMetadata", "aps:DescribeWorkspace"]
      Resource = aws_prometheus_workspace.this.arn
    }]
  })
}

resource "aws_grafana_workspace" "this" {
  name                     = var.name
  account_access_type      = "CURRENT_ACCOUNT"
  authentication_providers = ["AWS_SSO"]
  permission_type          = "CUSTOMER_MANAGED"
  role_arn                 = aws_iam_role.grafana.arn
  data_sources             = ["PROMETHEUS"]
  grafana_version          = var.grafana_version
  vpc_configuration {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.scraper.id]
  }
}

resource "grafana_data_source" "prometheus" {
  type = "grafana-amazonprometheus-datasource"
  name = "prometheus"
  url  = aws_prometheus_workspace.this.prometheus_endpoint
  json_data_encoded = jsonencode({
    sigV4Auth     = true
    sigV4AuthType = "ec2_iam_role"
    sigV4Region   = var.region
  })
}

resource "grafana_dashboard" "this" {
  for_each    = local.dashboards
  config_json = file("${var.monitoring_dir}/dashboards/${each.value}")
  overwrite   = true
}

# The grafana provider (envs/prod/versions.tf) signs in with this token to load the data
# source and dashboards; it lives 30 days, and the next apply after that makes a new one.
resource "aws_grafana_workspace_service_account" "terraform" {
  name         = "terraform"
  grafana_role = "ADMIN"
  workspace_id = aws_grafana_workspace.this.id
}

resource "aws_grafana_workspace_service_account_token" "terraform" {
  name               = "terraform"
  service_account_id = aws_grafana_workspace_service_account.terraform.service_account_id
  seconds_to_live    = 2592000
  workspace_id       = aws_grafana_workspace.this.id
}
