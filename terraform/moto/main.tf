# A real `terraform apply` and `destroy` of the module against moto (AWS services emulated on
# loopback): run by terraform/moto.sh, which starts moto and passes its endpoint. Nothing here
# reaches AWS: every service endpoint is moto's, and the credentials are moto's dummies.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

variable "endpoint" {
  description = "moto's URL, http://127.0.0.1:PORT."
  type        = string
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  endpoints {
    ec2            = var.endpoint
    elbv2          = var.endpoint
    iam            = var.endpoint
    kms            = var.endpoint
    s3             = var.endpoint
    secretsmanager = var.endpoint
    ssm            = var.endpoint
    sts            = var.endpoint
  }
}

resource "aws_vpc" "test" {
  cidr_block = "10.0.0.0/16"
}

resource "aws_subnet" "test" {
  count             = 3
  vpc_id            = aws_vpc.test.id
  cidr_block        = "10.0.${count.index + 1}.0/24"
  availability_zone = ["us-east-1a", "us-east-1b", "us-east-1c"][count.index]
}

resource "aws_secretsmanager_secret" "token" {
  # checkov:skip=CKV_AWS_149: a throwaway secret in moto
  # checkov:skip=CKV2_AWS_57: a throwaway secret in moto
  for_each = toset(["cluster", "admin", "client"])
  name     = "moto/${each.key}.token"
}

module "ferrisdb" {
  source = "../modules/ferrisdb"

  name                     = "moto"
  vpc_id                   = aws_vpc.test.id
  subnet_ids               = aws_subnet.test[*].id
  client_cidrs             = ["10.0.0.0/16"]
  admin_cidrs              = ["10.0.9.0/24"]
  ami_id                   = "ami-12c6146b"
  compute_count            = 2
  deletion_protection      = false
  detailed_monitoring      = false # moto does not implement MonitorInstances
  cluster_token_secret_arn = aws_secretsmanager_secret.token["cluster"].arn
  admin_token_secret_arn   = aws_secretsmanager_secret.token["admin"].arn
  client_token_secret_arn  = aws_secretsmanager_secret.token["client"].arn
}

output "client_endpoint" {
  description = "Through the load balancer."
  value       = module.ferrisdb.client_endpoint
}

output "admin_endpoints" {
  description = "Every process's admin API."
  value       = module.ferrisdb.admin_endpoints
}

output "bucket_name" {
  description = "The bucket."
  value       = module.ferrisdb.bucket_name
}
