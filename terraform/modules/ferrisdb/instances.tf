# The instances, one resource for all: three safekeepers (one per subnet, so one per
# availability zone) with an encrypted WAL volume each, a pageserver with an encrypted cache
# volume, and the computes. Each boots cloud-init that runs its `ferrisdb` subcommand.

locals {
  tls_parameters = local.tls ? {
    "tls.pem" = var.tls.cert_parameter
    "tls.key" = var.tls.key_parameter
    "ca.pem"  = var.tls.ca_parameter
  } : {}
  internal_secrets = { cluster = local.secrets.cluster, admin = local.secrets.admin }

  # name => what differs between instances. `volume`: the data volume on /var/lib/ferrisdb,
  # `keep` when it must outlive the instance (the WAL does; a cache does not).
  nodes = merge(
    { for i in range(3) : "safekeeper-${i + 1}" => {
      component = "safekeeper"
      type      = var.safekeeper_instance_type
      eni       = aws_network_interface.safekeeper[i].id
      args      = local.safekeeper_args[i]
      secrets   = local.internal_secrets
      volume    = { size = var.safekeeper_volume_gb, keep = true }
    } },
    { pageserver = {
      component = "pageserver"
      type      = var.pageserver_instance_type
      eni       = aws_network_interface.pageserver.id
      args      = local.pageserver_args
      secrets   = local.internal_secrets
      volume    = { size = var.pageserver_cache_gb, keep = false }
    } },
    { for i in range(var.compute_count) : "compute-${i + 1}" => {
      component = "compute"
      type      = var.compute_instance_type
      eni       = aws_network_interface.compute[i].id
      args      = local.compute_args[i]
      secrets   = local.secrets
      volume    = null
    } },
  )
}

resource "aws_instance" "node" {
  for_each             = local.nodes
  ami                  = var.ami_id
  instance_type        = each.value.type
  iam_instance_profile = aws_iam_instance_profile.this.name
  ebs_optimized        = true
  monitoring           = var.detailed_monitoring
  user_data = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    component      = each.value.component
    args           = join(" ", each.value.args)
    region         = local.region
    secrets        = each.value.secrets
    tls_parameters = local.tls_parameters
    data_device    = each.value.volume == null ? null : "/dev/sdf"
    binary_url     = var.ferrisdb_binary_url
    binary_sha256  = var.ferrisdb_binary_sha256
  })

  network_interface {
    network_interface_id = each.value.eni
    device_index         = 0
  }
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  root_block_device {
    encrypted   = true
    kms_key_id  = local.kms_key_arn
    volume_type = "gp3"
    volume_size = var.root_volume_gb
  }
  dynamic "ebs_block_device" {
    for_each = each.value.volume == null ? [] : [each.value.volume]
    content {
      device_name           = "/dev/sdf"
      volume_type           = "gp3"
      volume_size           = ebs_block_device.value.size
      encrypted             = true
      kms_key_id            = local.kms_key_arn
      delete_on_termination = !ebs_block_device.value.keep
    }
  }
  tags = merge(local.tags, { Name = "${var.name}-${each.key}", "ferrisdb:component" = each.value.component })

  lifecycle {
    precondition {
      condition     = length(distinct([for s in slice(data.aws_subnet.selected, 0, 3) : s.availability_zone])) == 3
      error_message = "The first three subnet_ids must be in three different availability zones: a quorum must survive the loss of one."
    }
    precondition {
      condition     = (var.ferrisdb_binary_url == null) == (var.ferrisdb_binary_sha256 == null)
      error_message = "ferrisdb_binary_url and ferrisdb_binary_sha256 go together."
    }
  }
}
