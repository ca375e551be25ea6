# Europe: the bucket names config/production.yaml points at (mercurypay-lake, -privacy-keys).
region                    = "eu-west-1"
name                      = "mercury-euw1"
az_ids                    = ["euw1-az1", "euw1-az2", "euw1-az3"]
vpc_cidr_block            = "10.40.0.0/16"
bucket_prefix             = "mercurypay"
flink_image_tag           = "online-features-2.3.0-1"
schema_registry_image_tag = "cp-schema-registry-8.0.0-msk-iam-1"
