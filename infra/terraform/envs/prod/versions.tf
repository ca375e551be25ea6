terraform {
  required_version = ">= 1.10"

  required_providers {
    aws        = { source = "hashicorp/aws", version = "~> 6.0" }
    random     = { source = "hashicorp/random", version = "~> 3.6" }
    helm       = { source = "hashicorp/helm", version = "~> 3.0" }
    kubernetes = { source = "hashicorp/kubernetes", version = "~> 2.35" }
    kafka      = { source = "Mongey/kafka", version = "~> 0.12" }
    snowflake  = { source = "snowflakedb/snowflake", version = "~> 2.0" }
    grafana    = { source = "grafana/grafana", version = "~> 4.0" }
  }

  # One state per region: `terraform init -backend-config=backend-<region>.hcl`.
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      project     = "mercury"
      environment = "prod"
      managed_by  = "terraform"
    }
  }
}

# Topics are managed through the brokers' IAM listener, so plan/apply run inside the VPC.
provider "kafka" {
  bootstrap_servers = split(",", module.msk.bootstrap_brokers_iam)
  tls_enabled       = true
  sasl_mechanism    = "aws-iam"
  sasl_aws_region   = var.region
}

provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_ca_certificate)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes = {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_ca_certificate)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}

# Each region has its own Snowflake account (EU data stays in the EU). The account and the
# credentials come from the environment (SNOWFLAKE_ORGANIZATION_NAME, SNOWFLAKE_ACCOUNT_NAME,
# SNOWFLAKE_USER, SNOWFLAKE_PRIVATE_KEY...), never from this repository.
provider "snowflake" {
  role = var.snowflake_admin_role
}

# Amazon Managed Grafana's API, through the token the monitoring module makes (dashboards and
# the Prometheus data source). Like kubernetes/helm: the workspace must exist before it plans.
provider "grafana" {
  url  = "https://${module.monitoring.grafana_endpoint}"
  auth = module.monitoring.grafana_token
}
