# What a `cargo xtask vmtest` VM runs (vng --exec), after the variables
# xtask writes above: RESULTS, TEST_BIN, FILTER and the tests' environment.
#
# The guest sees the host's filesystem read-only (tmpfs overlays on /tmp,
# /usr, /etc, /var), so the exporter, the test binary and the venvs run in
# place. vng cannot hand back this script's output or exit code, so both go
# into $RESULTS, the one directory that writes through to the host; xtask
# reads them after the VM is gone.

uname -r > "$RESULTS/release"

# The exporter resolves tracepoints in tracefs; virtme-ng mounts it on the
# kernels seen so far, but not every init does.
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing
fi

# --show-output: what passing tests printed too (what the exporter said on
# this kernel).
"$TEST_BIN" --ignored --test-threads 1 --show-output "$FILTER" > "$RESULTS/output" 2>&1
echo $? > "$RESULTS/exit-code.partial"
# Renamed last: an exit-code file means the run ended on its own.
mv "$RESULTS/exit-code.partial" "$RESULTS/exit-code"
sync
