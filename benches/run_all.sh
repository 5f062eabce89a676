#!/usr/bin/env bash
# Every comparison of BENCHMARKS.md in one run on this machine: prints the machine and the date,
# then each bench's paired lines, in the order of BENCHMARKS.md's sections.
#
#   benches/run_all.sh > bench-run.txt 2>&1
#
# Needs PostgreSQL (SQLX_ATOMIC_BENCH_POSTGRES_URL, else the tests' URL, else 127.0.0.1:5432) and,
# for section 9, pgbouncer (`.ci/pgbouncer start`), and for section 10 the replica (`.ci/replica
# start`). Run it on a quiet machine: no other build or
# test, and the Galera cluster stopped. ROUNDS (default 500) sets the paired rounds of sections 1,
# 2, 4, 5, 9 and 10; sections 2 and 5 run a quarter of them. About 40 minutes on two cores once built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-500}"

echo "== machine"
date -u '+%Y-%m-%d %H:%M UTC'
lscpu | sed -n 's/^Model name: *//p'
echo "$(nproc) CPUs, Linux $(uname -r)"
rustc --version
psql -h 127.0.0.1 -U postgres -d test -Atc 'SHOW server_version' 2>/dev/null | sed 's/^/PostgreSQL /' || true
uptime

cargo bench --all-features --no-run -q 2>/dev/null || cargo bench --all-features --no-run

paired() { # paired <bench> [VAR=value ...]
  local bench=$1; shift
  env SQLX_ATOMIC_PAIRED=1 "$@" cargo bench -q --all-features --bench "$bench" 2>/dev/null
}

echo "== 1, 2, 5. one transaction, nesting, hooks: pool's checks"
paired overhead SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS"
echo "== 1, 2. one transaction, nesting: test_with_begin"
paired overhead SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN=1 \
  SQLX_ATOMIC_PAIRED_ONLY='vs sqlx'
echo "== 1. calibration"
paired overhead SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" SQLX_ATOMIC_PAIRED_ONLY=calibration
echo "== 3. statement counts"
cargo bench -q --all-features --bench statement_counts 2>/dev/null
echo "== 4. per-request transactions, against a control: pool's checks"
paired requests SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" SQLX_ATOMIC_PAIRED_ONLY='[control]'
echo "== 4. per-request transactions, against a control: test_with_begin"
paired requests SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN=1 \
  SQLX_ATOMIC_PAIRED_ONLY='_tx (C) [control]'
echo "== 6. concurrency"
paired scale SQLX_ATOMIC_PAIRED_ROUNDS=100
echo "== 8. conflicts and options"
env SQLX_ATOMIC_CONFLICT_ROUNDS=16 SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" \
  cargo bench -q --all-features --bench conflicts 2>/dev/null
echo "== 9. transaction pooling"
env SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" cargo bench -q --all-features --bench pooling 2>/dev/null
echo "== 9. transaction pooling: test_with_begin (the pools the library builds)"
env SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN=1 \
  SQLX_ATOMIC_PAIRED_ONLY=pgbouncer/ cargo bench -q --all-features --bench pooling 2>/dev/null
echo "== 10. read replicas"
env SQLX_ATOMIC_PAIRED_ROUNDS="$ROUNDS" cargo bench -q --all-features --bench replica 2>/dev/null
echo "== 11. transactional outbox (PostgreSQL and Redis)"
cargo bench -q --all-features --bench outbox 2>/dev/null
echo "== 7. compile time"
python3 benches/compile_cost/gen.py --runs 5
echo "== done $(date -u '+%H:%M UTC')"
