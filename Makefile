# ferry -- local development / CI stack. `make up` installs what is missing and starts everything.
SHELL := /bin/bash
.DEFAULT_GOAL := up

ROOT  := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
LOCAL := $(ROOT)/deploy/local
STACK := $(LOCAL)/stack.sh

.PHONY: tools up down status logs clean-data

tools: ## install pinned nats-server, versitygw, nats CLI and Cassandra jars into .local (once)
	@bash $(LOCAL)/tools.sh

up: tools ## start NATS, versitygw and two Cassandra nodes (idempotent)
	@bash $(STACK) up

down: ## stop every service of ours (data kept)
	@bash $(STACK) down

status: ## one line per service; non-zero if any is down
	@bash $(STACK) status

logs: ## print where the logs are
	@bash $(STACK) logs

clean-data: ## stop, then wipe .local/data and .local/logs
	@bash $(STACK) clean-data
