# The computes' client port behind a network load balancer (TCP: TLS, when on, is the
# compute's own, end to end). Health checks probe /readyz on the admin port: only the
# primary is healthy, so clients are not sent to standbys, which refuse commits.

resource "aws_lb" "compute" {
  # checkov:skip=CKV_AWS_91: NLB access logs record TLS listeners only; this listener is TCP (TLS, when on, ends in the compute)
  name                             = "${var.name}-ferrisdb"
  load_balancer_type               = "network"
  internal                         = var.nlb_internal
  subnets                          = coalesce(var.nlb_subnet_ids, var.subnet_ids)
  security_groups                  = [aws_security_group.this["nlb"].id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "compute" {
  name        = "${var.name}-ferrisdb-compute"
  port        = local.ports.compute_grpc
  protocol    = "TCP"
  target_type = "instance"
  vpc_id      = var.vpc_id
  health_check {
    protocol            = local.tls ? "HTTPS" : "HTTP"
    port                = tostring(local.ports.compute_http)
    path                = "/readyz"
    healthy_threshold   = 2
    unhealthy_threshold = 2
    interval            = 10
  }
  tags = local.tags
}

resource "aws_lb_target_group_attachment" "compute" {
  count            = var.compute_count
  target_group_arn = aws_lb_target_group.compute.arn
  target_id        = aws_instance.node["compute-${count.index + 1}"].id
  port             = local.ports.compute_grpc
}

resource "aws_lb_listener" "client" {
  load_balancer_arn = aws_lb.compute.arn
  port              = local.ports.compute_grpc
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.compute.arn
  }
  tags = local.tags
}
