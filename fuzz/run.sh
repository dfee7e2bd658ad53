#!/usr/bin/env bash
# Runs the fuzz targets one after another (the machine's cores are
# shared), each for SECONDS (default 180), from its seeds and the corpus
# of earlier runs, with the memory limit, input size and dictionary that
# suit it. Each run's libFuzzer output goes to logs/TARGET.log; a crash
# stops that target's run and leaves the input in artifacts/TARGET/.
#
#   fuzz/run.sh                  every target, 3 minutes each
#   fuzz/run.sh 600 proxy_header one target, 10 minutes
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-180}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(proxy_header metrics_request cli merge_input report_json histogram)

# Per target: the longest input worth trying (past each parser's own
# limit: 4 KiB of PROXY header, 8 KiB of request head) and the dictionary.
declare -A max_len=(
    [proxy_header]=5000 [metrics_request]=10000 [cli]=512
    [merge_input]=20000 [report_json]=16384 [histogram]=16384
)
declare -A dict=(
    [proxy_header]=dicts/proxy_header.dict [cli]=dicts/cli.dict
    [merge_input]=dicts/report_json.dict [report_json]=dicts/report_json.dict
)

# AddressSanitizer (on by default in cargo-fuzz) keeps up to 256 MB of
# freed memory in quarantine, which would leave the RSS limit below
# measuring ASan rather than the parsers: a smaller quarantine gives it room.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}

mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    flags=(-max_total_time="$secs" -max_len="${max_len[$t]:-4096}"
        -rss_limit_mb=512 -malloc_limit_mb=256 -print_final_stats=1)
    [ -n "${dict[$t]:-}" ] && flags+=(-dict="${dict[$t]}")
    echo "== $t: ${secs}s"
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- "${flags[@]}" >"logs/$t.log" 2>&1; then
        grep -E '^#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb' "logs/$t.log"
    else
        echo "$t: found something, see logs/$t.log and artifacts/$t/"
        status=1
    fi
done
exit $status
