#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, seeded from the captured syslog
# fixtures and the shipped filters. Needs cargo-fuzz (cargo install cargo-fuzz); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use the sanitizer flags. Corpora and artifacts stay in
# fuzz/corpus and fuzz/artifacts (git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(framing parse parse_fast filter_match filter_fast dispatch filter_compile f2b_ini f2b_translate)
fixtures=../tests/fixtures/syslog
mkdir -p corpus/framing corpus/parse corpus/parse_fast corpus/filter_match corpus/filter_fast corpus/dispatch corpus/filter_compile corpus/f2b_ini corpus/f2b_translate
cp -n "$fixtures"/*.bin corpus/framing/ 2>/dev/null || true
cp -n "$fixtures"/*.bin corpus/parse/ 2>/dev/null || true
# parse_fast: one frame a file (the newline-framed fixtures' lines).
cat "$fixtures"/*.bin | tr '\0' '\n' | split -a 4 -l 1 - corpus/parse_fast/fixture-
for f in "$fixtures"/[abcxyz]0*.bin; do tail -c +1 "$f" > "corpus/filter_match/$(basename "$f")"; done
# filter_fast: the message of every sample and fixture log line (its syslog header cut off).
if [[ ! -e corpus/filter_fast/.seeded ]]; then
  cat ../tests/fixtures/fail2ban-logs/* ../tests/fixtures/sshd/*.log | grep -v '^#' |
    sed -E 's/^([A-Z][a-z]{2} +[0-9]+ [0-9:]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:]{8}[^ ]*) ([^ ]+ )?[^ :]+(\[[0-9]+\])?:? //' |
    split -a 4 -l 1 - corpus/filter_fast/sample-
  touch corpus/filter_fast/.seeded
fi
cp -n corpus/filter_fast/sample-* corpus/dispatch/ 2>/dev/null || true
grep -ho "'[^']*<HOST>[^']*'" ../conf/filter.d/*.toml | tr -d "'" | split -l 1 - corpus/filter_compile/shipped- || true
[[ -d /etc/fail2ban/filter.d ]] && cp -n /etc/fail2ban/filter.d/*.conf corpus/f2b_ini/ 2>/dev/null || true
[[ -d /etc/fail2ban/filter.d ]] && grep -h '^failregex\|^ *\^' /etc/fail2ban/filter.d/*.conf | sed 's/^failregex *= *//' | split -l 1 - corpus/f2b_translate/stock- || true
failed=()
for t in "${targets[@]}"; do
  echo "== $t for ${seconds}s"
  # One target's finding must not stop the others: record it and go on.
  dict=(); [[ -f "$t.dict" ]] && dict=(-dict="$t.dict")
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" -- "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 >"$t.log" 2>&1; then
    failed+=("$t")
  fi
  grep -E '^(#[0-9]+.*DONE|Done|==[0-9]+== ERROR|SUMMARY|panicked|artifact_prefix)' "$t.log" | tail -4
  rm -f "$t.log"
done
if ((${#failed[@]})); then
  echo "findings in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
