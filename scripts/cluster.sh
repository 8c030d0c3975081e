#!/usr/bin/env bash
# A local Ray cluster on this machine, driven the way users drive a real one.
#   scripts/cluster.sh start            head node; dashboard + Jobs API on 127.0.0.1:8265, token auth on
#   scripts/cluster.sh submit [--submission-id ID] -- CMD..
#                                       `ray job submit` CMD with this repo as the working dir, wait, stream logs
#   scripts/cluster.sh logs ID          follow a job's logs
#   scripts/cluster.sh token            create ~/.ray/auth_token if missing (cluster.yaml copies it to every node)
#   scripts/cluster.sh status | stop
# Ray 2.60 enables token authentication by default: the token lives in ~/.ray/auth_token and clients
# need RAY_AUTH_MODE=token to send it. We keep auth on rather than opting out.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" RAY_AUTH_MODE=token HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
ADDRESS=${RAY_DASHBOARD_ADDRESS:-http://127.0.0.1:8265}
case "${1:-}" in
  start)
    if ray status >/dev/null 2>&1; then echo "a Ray cluster is already running"; exit 0; fi
    ray get-auth-token --generate >/dev/null   # a fresh machine has no token yet
    chmod 600 ~/.ray/auth_token                 # Ray writes it 0644: any local user could read it
    # --node-ip-address: the node advertises (and its agents bind) loopback, not the machine's address.
    # Ray's own gRPC servers (GCS, raylet, workers) still listen on every interface; token auth guards
    # them, and a host firewall is the way to close them (see README, Clusters).
    ray start --head --port=6390 --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --dashboard-port=8265 \
      --num-cpus="${RAY_NUM_CPUS:-4}" --disable-usage-stats
    echo "dashboard: $ADDRESS (token in ~/.ray/auth_token)" ;;
  submit)
    shift; EXTRA=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do EXTRA+=("$1"); shift; done
    [[ "${1:-}" == "--" ]] && shift
    ray job submit --address "$ADDRESS" --working-dir . "${EXTRA[@]}" \
      --runtime-env-json '{"env_vars": {"HF_HUB_OFFLINE": "'"$HF_HUB_OFFLINE"'", "TOKENIZERS_PARALLELISM": "false", "SYNTHEMBED_WORKDIR": "'"$PWD"'"}}' \
      -- "$@" ;;
  token) ray get-auth-token --generate >/dev/null && chmod 600 ~/.ray/auth_token && echo "token in ~/.ray/auth_token (0600)" ;;
  logs) ray job logs --address "$ADDRESS" -f "$2" ;;
  status) ray status; ray job list --address "$ADDRESS" ;;
  stop) ray stop ;;
  *) echo "usage: $0 start | token | submit [--submission-id ID] -- CMD... | logs ID | status | stop" >&2; exit 2 ;;
esac
