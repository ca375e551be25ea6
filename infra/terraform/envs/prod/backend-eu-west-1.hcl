# terraform init -backend-config=backend-eu-west-1.hcl (the state bucket and its KMS key are made once,
# by hand or a bootstrap stack, before the first init).
bucket       = "mercurypay-terraform-state-eu-west-1"
key          = "prod/terraform.tfstate"
region       = "eu-west-1"
encrypt      = true
use_lockfile = true
