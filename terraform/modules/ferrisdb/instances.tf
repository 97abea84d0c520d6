# The instances, one resource for all: three safekeepers (one per subnet, so one per
# availability zone) with an encrypted WAL volume each, a pageserver with an encrypted cache
# volume, and the computes. Each boots cloud-init that runs its `ferrisdb` subcommand.
#
# A safekeeper's WAL volume is a resource of its own, attached to whichever instance holds
# the name: replacing the instance (a new AMI, a new binary) attaches the same volume, with
# the same log, to the new one. An inline block device would be a new, empty volume, and
# three at once would lose every commit not yet in the bucket. Instances are never replaced
# or restarted by a change of `ami_id` or of what cloud-init runs (`ignore_changes`): the
# operator rolls them one at a time (terraform/README.md, "Upgrades").

locals {
  tls_parameters = local.tls ? {
    "tls.pem" = var.tls.cert_parameter
    "tls.key" = var.tls.key_parameter
    "ca.pem"  = var.tls.ca_parameter
  } : {}
  internal_secrets = { cluster = local.secrets.cluster, admin = local.secrets.admin }

  # name => what differs between instances. `volume`: a data volume made with the instance
  # (the pageserver's cache, gone with it); `device`: whether /var/lib/ferrisdb is a volume's
  # (the safekeepers' is `aws_ebs_volume.wal`, below).
  nodes = merge(
    { for i in range(3) : "safekeeper-${i + 1}" => {
      component = "safekeeper"
      type      = var.safekeeper_instance_type
      eni       = aws_network_interface.safekeeper[i].id
      args      = local.safekeeper_args[i]
      secrets   = local.internal_secrets
      volume    = null
      device    = true
    } },
    { pageserver = {
      component = "pageserver"
      type      = var.pageserver_instance_type
      eni       = aws_network_interface.pageserver.id
      args      = local.pageserver_args
      secrets   = local.internal_secrets
      volume    = { size = var.pageserver_cache_gb }
      device    = true
    } },
    { for i in range(var.compute_count) : "compute-${i + 1}" => {
      component = "compute"
      type      = var.compute_instance_type
      eni       = aws_network_interface.compute[i].id
      args      = local.compute_args[i]
      secrets   = local.secrets
      volume    = null
      device    = false
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
    data_device    = each.value.device ? "/dev/sdf" : null
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
      delete_on_termination = true
    }
  }
  tags = merge(local.tags, { Name = "${var.name}-${each.key}", "ferrisdb:component" = each.value.component })

  lifecycle {
    # A new AMI or binary reaches an instance when the operator replaces it, one at a time
    # (README, "Upgrades"): applied to all at once, it stopped every safekeeper together.
    ignore_changes = [ami, user_data]
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

# Each safekeeper's WAL: outlives every instance that holds it.
resource "aws_ebs_volume" "wal" {
  count             = 3
  availability_zone = data.aws_subnet.selected[count.index].availability_zone
  type              = "gp3"
  size              = var.safekeeper_volume_gb
  encrypted         = true
  kms_key_id        = local.kms_key_arn
  tags              = merge(local.tags, { Name = "${var.name}-safekeeper-${count.index + 1}-wal", "ferrisdb:component" = "safekeeper" })
}

resource "aws_volume_attachment" "wal" {
  count       = 3
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.wal[count.index].id
  instance_id = aws_instance.node["safekeeper-${count.index + 1}"].id
  # Detached from a running instance, the log could be cut mid-write: stop it first.
  stop_instance_before_detaching = true
}
