# FerrisDB on AWS: a versioned, encrypted bucket (the source of truth at rest), three
# safekeepers in three availability zones with their WAL on EBS, a pageserver with a cache
# volume, and computes behind a network load balancer. Every process is the `ferrisdb`
# binary run by a systemd unit that cloud-init writes (templates/cloud-init.yaml.tftpl).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_subnet" "selected" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

locals {
  tags        = merge({ "ferrisdb:cluster" = var.name }, var.tags)
  bucket_name = coalesce(var.bucket_name, "${var.name}-ferrisdb-${data.aws_caller_identity.current.account_id}")
  kms_key_arn = coalesce(var.kms_key_arn, try(aws_kms_key.this[0].arn, null))
  tls         = var.tls != null
  scheme      = local.tls ? "https" : "http"

  # Ports, as `ferrisdb dev` lays them out: gRPC, and admin HTTP = gRPC + 80.
  ports = {
    compute_grpc    = 4500
    compute_http    = 4580
    safekeeper_grpc = 4501
    safekeeper_http = 4581
    pageserver_grpc = 4510
    pageserver_http = 4590
  }

  object_store = "s3://${aws_s3_bucket.this.bucket}/${var.bucket_prefix}"
  region       = data.aws_region.current.name

  # Fixed addresses when given (known at plan time, and what TLS certificates name).
  safekeeper_ips  = coalesce(var.safekeeper_private_ips, aws_network_interface.safekeeper[*].private_ip)
  pageserver_ip   = coalesce(var.pageserver_private_ip, aws_network_interface.pageserver.private_ip)
  safekeeper_urls = [for ip in local.safekeeper_ips : "${local.scheme}://${ip}:${local.ports.safekeeper_grpc}"]
  pageserver_url  = "${local.scheme}://${local.pageserver_ip}:${local.ports.pageserver_grpc}"

  # Where the boot script puts the secrets (mode 0600, owned by the ferrisdb user).
  secret_files = {
    cluster = "/etc/ferrisdb/cluster.token"
    admin   = "/etc/ferrisdb/admin.token"
    client  = "/etc/ferrisdb/client.token"
  }
  tls_flags = local.tls ? ["--tls-cert", "/etc/ferrisdb/tls.pem", "--tls-key", "/etc/ferrisdb/tls.key", "--tls-ca", "/etc/ferrisdb/ca.pem"] : []
  auth_flags = [
    "--cluster-token-file", local.secret_files.cluster,
    "--admin-token-file", local.secret_files.admin,
  ]
  s3_flags = ["--object-store", local.object_store, "--s3-region", local.region]

  # The same subcommands and flags `ferrisdb dev` and docker-compose.yml run.
  safekeeper_args = [for i in range(3) : concat(
    [
      "safekeeper", "--name", "safekeeper-${i + 1}",
      "--listen-grpc", "0.0.0.0:${local.ports.safekeeper_grpc}",
      "--listen-http", "0.0.0.0:${local.ports.safekeeper_http}",
      "--data-dir", "/var/lib/ferrisdb/safekeeper",
    ],
    flatten([for j, url in local.safekeeper_urls : ["--peer", url] if j != i]),
    local.s3_flags, local.auth_flags, local.tls_flags,
  )]
  pageserver_args = concat(
    [
      "pageserver",
      "--listen-grpc", "0.0.0.0:${local.ports.pageserver_grpc}",
      "--listen-http", "0.0.0.0:${local.ports.pageserver_http}",
      "--cache-dir", "/var/lib/ferrisdb/cache",
      "--cache-disk-bytes", tostring(floor(var.pageserver_cache_gb * 0.9 * 1073741824)),
    ],
    flatten([for url in local.safekeeper_urls : ["--safekeeper", url]]),
    local.s3_flags, local.auth_flags, local.tls_flags,
  )
  # The first compute is the primary; the others are standbys that take over when it dies.
  compute_args = [for i in range(var.compute_count) : concat(
    [
      "compute",
      "--listen-grpc", "0.0.0.0:${local.ports.compute_grpc}",
      "--listen-http", "0.0.0.0:${local.ports.compute_http}",
      "--pageserver", local.pageserver_url,
      "--warm-tier-dir", "/var/lib/ferrisdb/warm",
      "--token-file", local.secret_files.client,
    ],
    flatten([for url in local.safekeeper_urls : ["--safekeeper", url]]),
    i == 0 ? [] : ["--standby", "--primary-endpoint", "${local.scheme}://${aws_network_interface.compute[0].private_ip}:${local.ports.compute_grpc}"],
    local.auth_flags, local.tls_flags,
  )]

  secrets = {
    cluster = var.cluster_token_secret_arn
    admin   = var.admin_token_secret_arn
    client  = var.client_token_secret_arn
  }
}

resource "aws_kms_key" "this" {
  count                   = var.kms_key_arn == null ? 1 : 0
  description             = "FerrisDB ${var.name}: bucket and volumes"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

data "aws_iam_policy_document" "kms" {
  # A key policy's "*" resource is the key itself, and this is AWS's default key policy: the
  # account administers the key through IAM (the instances' role grants only Decrypt and
  # GenerateDataKey).
  # checkov:skip=CKV_AWS_111: the default key policy; "*" is this key
  # checkov:skip=CKV_AWS_356: the default key policy; "*" is this key
  # checkov:skip=CKV_AWS_109: the default key policy; "*" is this key
  # The account administers the key; the instances use it through the role's own policy.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}
