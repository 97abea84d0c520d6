# Security groups: the internal ports (safekeeper and pageserver gRPC) open only between the
# components that call them, the client port only to client_cidrs (through the load
# balancer), admin ports only to admin_cidrs and the load balancer's health checks, and
# outbound HTTPS (S3, Secrets Manager, SSM) only to egress_cidrs.

locals {
  groups = {
    safekeeper = "the three safekeepers"
    pageserver = "the pageserver"
    compute    = "the computes"
    nlb        = "the computes' load balancer"
  }
}

resource "aws_security_group" "this" {
  for_each    = local.groups
  name        = "${var.name}-ferrisdb-${each.key}"
  description = "FerrisDB ${var.name}: ${each.value}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-ferrisdb-${each.key}" })
}

locals {
  sg = { for k, g in aws_security_group.this : k => g.id }

  # Component to component: [to group, port, from group, why].
  internal_rules = [
    ["safekeeper", local.ports.safekeeper_grpc, "compute", "WAL appends and elections from the computes"],
    ["safekeeper", local.ports.safekeeper_grpc, "pageserver", "WAL stream to the pageserver"],
    ["safekeeper", local.ports.safekeeper_grpc, "safekeeper", "repair and status between safekeepers"],
    ["pageserver", local.ports.pageserver_grpc, "compute", "page reads from the computes"],
    ["compute", local.ports.compute_grpc, "compute", "a standby probing its primary"],
    ["compute", local.ports.compute_grpc, "nlb", "client traffic through the load balancer"],
    ["compute", local.ports.compute_http, "nlb", "load balancer health checks on /readyz"],
  ]
  internal = { for r in local.internal_rules : "${r[2]}-to-${r[0]}-${r[1]}" => {
    to = r[0], port = r[1], from = r[2], why = r[3]
  } }

  admin_ports = {
    safekeeper = local.ports.safekeeper_http
    pageserver = local.ports.pageserver_http
    compute    = local.ports.compute_http
  }
  admin = { for pair in setproduct(keys(local.admin_ports), var.admin_cidrs) : "${pair[0]}-${pair[1]}" => {
    group = pair[0], cidr = pair[1]
  } }
  https_out = { for pair in setproduct(["safekeeper", "pageserver", "compute"], var.egress_cidrs) : "${pair[0]}-${pair[1]}" => {
    group = pair[0], cidr = pair[1]
  } }
}

resource "aws_vpc_security_group_ingress_rule" "internal" {
  for_each                     = local.internal
  security_group_id            = local.sg[each.value.to]
  referenced_security_group_id = local.sg[each.value.from]
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = each.value.why
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "internal" {
  for_each                     = local.internal
  security_group_id            = local.sg[each.value.from]
  referenced_security_group_id = local.sg[each.value.to]
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = each.value.why
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "client" {
  for_each          = toset(var.client_cidrs)
  security_group_id = local.sg.nlb
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.ports.compute_grpc
  to_port           = local.ports.compute_grpc
  description       = "FerrisDB clients"
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "admin" {
  for_each          = local.admin
  security_group_id = local.sg[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = local.admin_ports[each.value.group]
  to_port           = local.admin_ports[each.value.group]
  description       = "FerrisDB admin API (operators, Prometheus)"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = local.https_out
  security_group_id = local.sg[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "S3, Secrets Manager and SSM over HTTPS"
  tags              = local.tags
}

# Fixed interfaces, so every component's address is known before any instance boots and
# goes into the others' command lines without a dependency cycle.
resource "aws_network_interface" "safekeeper" {
  count           = 3
  subnet_id       = var.subnet_ids[count.index]
  private_ips     = var.safekeeper_private_ips == null ? null : [var.safekeeper_private_ips[count.index]]
  security_groups = [aws_security_group.this["safekeeper"].id]
  tags            = merge(local.tags, { Name = "${var.name}-safekeeper-${count.index + 1}" })
}

resource "aws_network_interface" "pageserver" {
  subnet_id       = var.subnet_ids[0]
  private_ips     = var.pageserver_private_ip == null ? null : [var.pageserver_private_ip]
  security_groups = [aws_security_group.this["pageserver"].id]
  tags            = merge(local.tags, { Name = "${var.name}-pageserver" })
}

resource "aws_network_interface" "compute" {
  count           = var.compute_count
  subnet_id       = var.subnet_ids[count.index % length(var.subnet_ids)]
  security_groups = [aws_security_group.this["compute"].id]
  tags            = merge(local.tags, { Name = "${var.name}-compute-${count.index + 1}" })
}
