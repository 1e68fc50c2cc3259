#!/bin/bash
# A loopback-only RabbitMQ for tusring's AMQP tests (Debian, no systemd needed, as root).
#
#   scripts/rabbitmq.sh start | stop | kill | status
#
# start   installs rabbitmq-server with apt-get when missing, starts a node listening on
#         127.0.0.1:5672 only (epmd and the distribution port on loopback too) and waits
#         until it answers. Does nothing when a node already listens.
# stop    stops the node (and the epmd this script launched, by its PID).
# kill    SIGKILLs the node (a broker crash; epmd stays): `start` brings it back.
# status  "running" when something listens on the AMQP port (a port check: an Erlang CLI
#         would launch epmd when nothing runs).
# guest/guest works from 127.0.0.1. RabbitMQ from Debian bookworm: install ~11 s, start
# ~5 s, stop ~3.5 s.
set -euo pipefail
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1          # AMQP listener 127.0.0.1:5672
export RABBITMQ_NODE_PORT=${RABBITMQ_NODE_PORT:-5672}
export ERL_EPMD_ADDRESS=127.0.0.1                   # epmd on 127.0.0.1:4369 only
export RABBITMQ_DIST_PORT=${RABBITMQ_DIST_PORT:-25672}
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_PID_FILE=/var/lib/rabbitmq/rabbit.pid
EPMD_PID_FILE=/var/lib/rabbitmq/tests-epmd.pid

epmd_pid() {  # PID of the process listening on 127.0.0.1:4369, if any
  ss -ltnpH "sport = :4369" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}
listening() { ss -ltn "sport = :$RABBITMQ_NODE_PORT" | grep -q LISTEN; }
beam_pid() {  # the node's PID: from its pid file, else the process on the AMQP port
  p=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "$p"; return 0; fi
  # A pid file can be lost (removed by a start that raced another one): find the node by
  # its listener and write the file again, so `stop` and `kill` never silently do nothing.
  p=$(ss -ltnpH "sport = :$RABBITMQ_NODE_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 |
    cut -d= -f2)
  [ -n "$p" ] || return 1
  echo "$p" >"$RABBITMQ_PID_FILE"
  echo "$p"
}

# One start/stop/kill at a time on this machine (several test runs may share the broker):
# two concurrent starts used to remove each other's pid file and crash the second node.
# The lock is fd 9 of this script only: every Erlang program it runs gets `9>&-`, since
# the node (and an epmd a CLI launches) outlives the script and would otherwise hold the
# lock for as long as it runs, so the next start, stop or kill would wait for ever.
if [ "${1:-start}" != status ]; then
  exec 9>/tmp/tusring-rabbitmq.lock
  flock 9
fi

case "${1:-start}" in
start)
  if listening; then echo "rabbitmq already running"; exit 0; fi
  if ! command -v rabbitmq-server >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "rabbitmq-server is not installed (install it, or run this as root on Debian)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  epmd_before=$(epmd_pid || true)
  rm -f "$RABBITMQ_PID_FILE"                         # a killed node leaves a stale one
  # 9>&-: the node (and the epmd it launches) must not inherit the lock, or it would hold
  # it for as long as it runs and every later start/stop/kill would wait forever.
  rabbitmq-server -detached 9>&-                     # the wrapper su's to user rabbitmq
  timeout 60 rabbitmqctl wait --timeout 60 "$RABBITMQ_PID_FILE" >/dev/null 9>&-
  timeout 60 rabbitmqctl await_startup >/dev/null 9>&-
  if [ -z "$epmd_before" ]; then                    # we launched epmd: remember it for stop
    p=$(epmd_pid || true); [ -n "$p" ] && echo "$p" > "$EPMD_PID_FILE"
  fi
  echo "rabbitmq up, beam pid $(cat $RABBITMQ_PID_FILE)";;
stop)
  epmd_before=$(epmd_pid || true)
  if beam_pid >/dev/null; then
    rabbitmqctl stop "$RABBITMQ_PID_FILE" >/dev/null 9>&- || true  # returns once it exited
  fi
  p=$(epmd_pid || true)   # an Erlang CLI may launch epmd itself when none runs: stop it too
  if [ -z "$epmd_before" ] && [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  if [ -f "$EPMD_PID_FILE" ]; then                           # epmd outlives the node
    p=$(cat "$EPMD_PID_FILE"); rm -f "$EPMD_PID_FILE"
    if [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = epmd ]; then
      kill "$p" 2>/dev/null || true
      for _ in $(seq 50); do ss -ltn "sport = :4369" | grep -q LISTEN || break; sleep 0.1; done
    fi
  fi
  echo "rabbitmq stopped";;
kill)
  if p=$(beam_pid); then
    kill -KILL "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    echo "rabbitmq killed (beam pid $p)"
  else
    echo "rabbitmq is not running"
  fi;;
status)
  listening && echo running || { echo "not running"; exit 1; };;
*)
  echo "usage: $0 start|stop|kill|status" >&2; exit 2;;
esac
