# Pinned tool versions for the local stack (sourced by the other deploy/local scripts).
# Bumping a version here makes `make tools` reinstall that tool (see the stamp files in .local/).
NATS_SERVER_PKG=github.com/nats-io/nats-server/v2
NATS_SERVER_VERSION=v2.15.2
NATS_CLI_PKG=github.com/nats-io/natscli/nats
NATS_CLI_VERSION=v0.5.0          # not v0.5.1
VERSITYGW_PKG=github.com/versity/versitygw/cmd/versitygw
VERSITYGW_VERSION=v1.8.0
# Cassandra's version lives in deploy/local/cassandra/pom.xml (<cassandra.version>).
