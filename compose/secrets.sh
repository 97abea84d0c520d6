#!/bin/sh
# Generates the secrets docker-compose.yml reads, into compose/secrets/ (or
# $FERRISDB_SECRETS_DIR). Nothing here is ever committed: the directory is in .gitignore and
# every file is created private (umask 077). Run it once before `docker compose up`; running it
# again keeps what exists (delete a file to rotate it).
#
#   cluster.token         the cluster credential (every internal call carries it)
#   admin.token           the admin API token (operators and Prometheus; not a member)
#   client.token          the compute's client token (applications, the CLI)
#   minio-root-user/-password   MinIO's root account (only the bucket init job uses it)
#   s3.env                FerrisDB's own MinIO account, limited to the bucket
#   ca.pem, server.pem, server.key   TLS for compose/tls.env (one certificate naming every
#                         service, for a local cluster; issue one per host in production)
set -eu
dir="${FERRISDB_SECRETS_DIR:-$(dirname "$0")/secrets}"
umask 077
mkdir -p "$dir"
cd "$dir"

command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }

hex() { [ -s "$1" ] || openssl rand -hex "$2" > "$1"; }
hex cluster.token 32
hex admin.token 32
hex client.token 32
hex minio-root-password 32
[ -s minio-root-user ] || echo "ferrisdb-root" > minio-root-user
if [ ! -s s3.env ]; then
    {
        echo "AWS_ACCESS_KEY_ID=ferrisdb-$(openssl rand -hex 8)"
        echo "AWS_SECRET_ACCESS_KEY=$(openssl rand -hex 32)"
        echo "AWS_REGION=us-east-1"
    } > s3.env
fi

if [ ! -s server.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/CN=FerrisDB compose CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=ferrisdb" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' \
        "subjectAltName=DNS:safekeeper-1,DNS:safekeeper-2,DNS:safekeeper-3,DNS:pageserver,DNS:compute,DNS:localhost,IP:127.0.0.1" \
        "extendedKeyUsage=serverAuth" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
fi
echo "secrets in $(pwd)"
