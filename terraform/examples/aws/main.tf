# An example root module: FerrisDB in an existing VPC, with Secrets Manager secrets for its
# three credentials. Terraform creates the secrets but never their values, so no credential
# lands in the state: put them in before the instances boot (README.md):
#
#   for s in cluster admin client; do
#     aws secretsmanager put-secret-value --secret-id "$NAME/ferrisdb/$s.token" \
#         --secret-string "$(openssl rand -hex 32)"
#   done

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

# One key for the bucket, the volumes and the credentials.
resource "aws_kms_key" "secrets" {
  description         = "FerrisDB ${var.name}: credentials"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.secrets_key.json
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "secrets_key" {
  # A key policy's "*" resource is the key itself, and this is AWS's default key policy: the
  # account administers the key through IAM (the instances' role grants only Decrypt and
  # GenerateDataKey).
  # checkov:skip=CKV_AWS_111: the default key policy; "*" is this key
  # checkov:skip=CKV_AWS_356: the default key policy; "*" is this key
  # checkov:skip=CKV_AWS_109: the default key policy; "*" is this key
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_secretsmanager_secret" "token" {
  for_each                = toset(["cluster", "admin", "client"])
  name                    = "${var.name}/ferrisdb/${each.key}.token"
  description             = "FerrisDB ${var.name}: the ${each.key} token"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = 7
  # checkov:skip=CKV2_AWS_57: FerrisDB rotates by file edits across members (docs/security.md, "Rotation"), not with a Lambda
}

module "ferrisdb" {
  source = "../../modules/ferrisdb"

  name                     = var.name
  vpc_id                   = var.vpc_id
  subnet_ids               = var.subnet_ids
  client_cidrs             = var.client_cidrs
  admin_cidrs              = var.admin_cidrs
  ami_id                   = var.ami_id
  ferrisdb_binary_url      = var.ferrisdb_binary_url
  ferrisdb_binary_sha256   = var.ferrisdb_binary_sha256
  kms_key_arn              = aws_kms_key.secrets.arn
  cluster_token_secret_arn = aws_secretsmanager_secret.token["cluster"].arn
  admin_token_secret_arn   = aws_secretsmanager_secret.token["admin"].arn
  client_token_secret_arn  = aws_secretsmanager_secret.token["client"].arn
  tags                     = { environment = "example" }
}
