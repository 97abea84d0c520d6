# One role for the instances: the bucket (and nothing else in S3), the three secrets, the TLS
# parameters, and the KMS key they are encrypted with.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-ferrisdb"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "instance" {
  statement {
    sid       = "ListTheBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.this.arn]
  }
  statement {
    sid       = "ObjectsUnderThePrefix"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.this.arn}/${var.bucket_prefix}/*"]
  }
  statement {
    sid       = "Credentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = values(local.secrets)
  }
  dynamic "statement" {
    for_each = local.tls ? [1] : []
    content {
      sid     = "TlsMaterial"
      actions = ["ssm:GetParameter"]
      resources = [for p in values(var.tls) :
      "arn:${data.aws_partition.current.partition}:ssm:${local.region}:${data.aws_caller_identity.current.account_id}:parameter${p}"]
    }
  }
  statement {
    sid       = "TheClusterKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "instance" {
  name   = "ferrisdb-bucket-and-secrets"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.instance.json
}

resource "aws_iam_instance_profile" "this" {
  name = "${var.name}-ferrisdb"
  role = aws_iam_role.this.name
  tags = local.tags
}
